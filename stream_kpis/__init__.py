"""stream-kpis: live business KPIs from customer events on Kafka."""

__version__ = "0.1.0"
