"""Finding, and when allowed installing, the programs the local services run.

Everything comes from Debian's packages except the Kafka broker, which is built from Maven
Central jars (see `kafka.py`). When a program is missing and we run as root on a machine with
apt-get, it is installed; otherwise the error names the program and the command to install it.
Set `STREAM_KPIS_NO_INSTALL=1` to never install anything.
"""

from __future__ import annotations

import logging
import os
import shutil

from stream_kpis.errors import ServiceError
from stream_kpis.services._process import environ_with, run_checked

logger = logging.getLogger(__name__)

# The Debian package that brings each program.
DEBIAN_PACKAGES = {
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "docker-compose": "docker-compose",
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
}

# Everything `stream-kpis services install` makes sure of, in install order.
ALL_COMMANDS = ("java", "mvn", "redis-server", "prometheus", "promtool", "docker-compose")

_apt_updated = False


def can_install() -> bool:
    """True when missing programs may be installed here: root, apt-get, and not opted out."""
    return (
        os.geteuid() == 0
        and shutil.which("apt-get") is not None
        and os.environ.get("STREAM_KPIS_NO_INSTALL", "") not in ("1", "true", "yes")
    )


def install_command(*packages: str) -> str:
    """The command a person runs to install Debian packages."""
    return "sudo apt-get install -y --no-install-recommends " + " ".join(packages)


def install_debian_packages(packages: list[str]) -> None:
    """apt-get install the packages (refreshing the package lists once per process)."""
    global _apt_updated
    env = environ_with(DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        logger.info("refreshing Debian package lists")
        run_checked(["apt-get", "update", "-qq"], "apt-get update", env=env)
        _apt_updated = True

    logger.info("installing Debian packages: %s", " ".join(packages))
    run_checked(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        f"installing {' '.join(packages)}",
        env=env,
    )


def require_command(name: str) -> str:
    """The path of program `name`, installing its Debian package first if missing and allowed."""
    path = shutil.which(name)
    if path:
        return path

    package = DEBIAN_PACKAGES.get(name, name)
    if not can_install():
        raise ServiceError(
            f"{name} is not installed: run `{install_command(package)}` (or scripts/setup)"
        )
    install_debian_packages([package])

    path = shutil.which(name)
    if not path:
        raise ServiceError(f"{name} is still missing after installing the {package} package")
    return path


def install_all() -> dict[str, str]:
    """Make sure every program and the Kafka jars are here; return what is where."""
    from stream_kpis.services.kafka import fetch_kafka_jars

    missing = sorted({DEBIAN_PACKAGES[name] for name in ALL_COMMANDS if not shutil.which(name)})
    if missing and can_install():
        install_debian_packages(missing)

    found = {name: require_command(name) for name in ALL_COMMANDS}
    found["kafka jars"] = str(fetch_kafka_jars())
    return found
