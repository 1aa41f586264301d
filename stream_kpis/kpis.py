"""The KPIs of KPI-SPEC section 4, as numerator and denominator over counted components.

The engine counts *components* per window and scope (a programme or `all`): plain sums such as
`churned_customers` or `nps_promoters`. Every KPI is a ratio of two of them (NPS of a
difference), so counts from several partitions or workers are merged by adding components, and
only then turned into values. Prometheus recording rules do the same with the exported
numerators and denominators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Number = int | float | Decimal

# Components counted per window and scope. Money components are Decimal, the rest int or float.
COHORT_COMPONENTS: tuple[str, ...] = (
    "churned_customers",
    "customers_active_in_window",
    "customers_active_at_start",
    "customers_retained",
    "mrr_at_start",
    "mrr_at_end_of_start_cohort",
    "mrr_retained",
)
SESSION_COMPONENTS: tuple[str, ...] = (
    "sessions",
    "session_duration_seconds",
    "converted_sessions",
    "goal_sessions",
    "goal_reached_sessions",
)
CONVERSION_COMPONENTS: tuple[str, ...] = (
    "prospects",
    "prospects_converted",
    "repeat_candidates",
    "repeat_converted",
    "advocate_candidates",
    "advocates_converted",
    "buyers",
    "repeat_buyers",
)
SURVEY_COMPONENTS: tuple[str, ...] = (
    "csat_responses",
    "csat_satisfied",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "nps_5pt_responses",
    "nps_5pt_promoters",
    "nps_5pt_detractors",
)
COMPONENTS: tuple[str, ...] = (
    *COHORT_COMPONENTS,
    *SESSION_COMPONENTS,
    *CONVERSION_COMPONENTS,
    *SURVEY_COMPONENTS,
)

# Upper bounds of the session-duration histogram, seconds (KPI-SPEC section 5).
SESSION_DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
)  # fmt: skip

# Non-cumulative counts of sessions per duration bucket: index i counts sessions with
# bound[i-1] < duration <= bound[i]; the last index counts the ones above the largest (+Inf).
HISTOGRAM_COMPONENTS: tuple[str, ...] = tuple(
    f"session_duration_bucket_{i}" for i in range(len(SESSION_DURATION_BUCKETS_SECONDS) + 1)
)

MONEY_COMPONENTS = frozenset({"mrr_at_start", "mrr_at_end_of_start_cohort", "mrr_retained"})


@dataclass(frozen=True, slots=True)
class KpiDefinition:
    name: str
    numerator: str
    denominator: str
    unit: str  # "ratio" (0..1), "score" (-100..100), "seconds", "money_ratio" (may exceed 1)
    needs_cohort: bool = False  # retention-like KPIs have no data in the `all` window
    scale: float = 1.0

    def terms(self, components: dict[str, Number]) -> tuple[Number, Number]:
        """Numerator and denominator of this KPI from one scope's components."""
        den = components.get(self.denominator, 0)
        if self.numerator.endswith("promoters-detractors"):
            prefix = self.numerator.removesuffix("promoters-detractors")
            promoters: Any = components.get(prefix + "promoters", 0)
            num = promoters - components.get(prefix + "detractors", 0)
        else:
            num = components.get(self.numerator, 0)
        return num, den


KPIS: tuple[KpiDefinition, ...] = (
    KpiDefinition("churn_rate", "churned_customers", "customers_active_in_window", "ratio"),
    KpiDefinition(
        "customer_retention_rate",
        "customers_retained",
        "customers_active_at_start",
        "ratio",
        needs_cohort=True,
    ),
    KpiDefinition(
        "net_dollar_retention",
        "mrr_at_end_of_start_cohort",
        "mrr_at_start",
        "money_ratio",
        needs_cohort=True,
    ),
    KpiDefinition(
        "gross_revenue_retention", "mrr_retained", "mrr_at_start", "ratio", needs_cohort=True
    ),
    KpiDefinition(
        "average_session_duration_seconds", "session_duration_seconds", "sessions", "seconds"
    ),
    KpiDefinition("session_conversion_rate", "converted_sessions", "sessions", "ratio"),
    KpiDefinition("goal_completion_rate", "goal_reached_sessions", "goal_sessions", "ratio"),
    KpiDefinition("visitor_conversion_rate", "prospects_converted", "prospects", "ratio"),
    KpiDefinition("repeat_conversion_rate", "repeat_converted", "repeat_candidates", "ratio"),
    KpiDefinition(
        "advocate_conversion_rate", "advocates_converted", "advocate_candidates", "ratio"
    ),
    KpiDefinition("repeat_customer_rate", "repeat_buyers", "buyers", "ratio"),
    KpiDefinition("csat", "csat_satisfied", "csat_responses", "ratio"),
    KpiDefinition("nps", "nps_promoters-detractors", "nps_responses", "score", scale=100.0),
    KpiDefinition(
        "nps_5pt", "nps_5pt_promoters-detractors", "nps_5pt_responses", "score", scale=100.0
    ),
)

KPI_BY_NAME = {kpi.name: kpi for kpi in KPIS}

Z_95 = 1.96


def kpi_value(kpi: KpiDefinition, numerator: Number, denominator: Number) -> float | None:
    """The KPI's value, or None ("no data") when the denominator is zero."""
    if not denominator:
        return None
    return float(Decimal(numerator) / Decimal(denominator)) * kpi.scale


def csat_margin_of_error(satisfied: Number, responses: Number) -> float | None:
    """95% margin of error of a CSAT share: 1.96 * sqrt(p(1-p)/n)."""
    if not responses:
        return None
    p = float(satisfied) / float(responses)
    return Z_95 * math.sqrt(p * (1 - p) / float(responses))


def nps_margin_of_error(promoters: Number, detractors: Number, responses: Number) -> float | None:
    """95% margin of error of an NPS, in NPS points: 100 * 1.96 * sqrt((P+D-(P-D)^2)/n)."""
    if not responses:
        return None
    n = float(responses)
    p, d = float(promoters) / n, float(detractors) / n
    variance = max(p + d - (p - d) ** 2, 0.0)
    return 100.0 * Z_95 * math.sqrt(variance / n)
