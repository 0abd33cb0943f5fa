"""deploy/docker-compose.yml stays valid for users with Docker (no engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_whole_system_with_the_contract_environment() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "worker", "projector", "api"} <= set(services)
    for name in ("worker", "projector", "api"):
        service = services[name]
        env = service["environment"]
        assert env["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["LOYALTY_DATABASE_URL"].startswith("postgresql://")
        assert env["LOYALTY_DAILY_SWEEP"] in {"on", "off"}
        assert service["command"] == [name]
        assert (
            Settings.from_env({k: str(v) for k, v in env.items()}).database_url
            == env["LOYALTY_DATABASE_URL"]
        )
    assert "8080" in " ".join(str(p) for p in services["api"]["ports"])
    assert (ROOT / services["worker"]["build"]["dockerfile"]).exists()


def test_the_image_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    sources = [line.split()[1] for line in dockerfile if line.startswith("COPY ")]
    assert sources, "the image copies the package"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
