"""The API's description, OpenAPI 3.1, served at /openapi.json.

Its schemas are JSON Schema 2020-12, so a client can validate what it receives;
tests/integration/test_openapi.py holds every route and every answer the API really
gives against this document.
"""

from __future__ import annotations

from typing import Any

INTEGER = {"type": "integer"}
STRING = {"type": "string"}
INSTANT = {"type": "string", "description": "RFC 3339, UTC: 2026-03-01T12:00:00Z"}
MAYBE_INSTANT = {"type": ["string", "null"], "description": "RFC 3339, UTC, or null"}
DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "description": "an amount"}
MAYBE_DECIMAL = {"type": ["string", "null"], "pattern": r"^-?[0-9]+\.[0-9]{2}$"}
RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    # Closed: an answer with a field the description lacks fails the contract test.
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


BADGE = obj({"id": STRING, "earned_at": INSTANT})
MEMBER = {
    "member_id": STRING,
    "balance": INTEGER,
    "tier": STRING,
    "qualifying_points": INTEGER,
    "lifetime_points": INTEGER,
    "pending_points": INTEGER,
    "last_event_at": MAYBE_INSTANT,
    "enrolled_at": MAYBE_INSTANT,
    "birth_date": {"type": ["string", "null"], "format": "date"},
}
SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": STRING}),
    "Member": obj({**MEMBER, "badges": array(BADGE)}),
    "MemberAsOf": obj(
        {
            **{k: v for k, v in MEMBER.items() if k != "last_event_at"},
            "as_of": INSTANT,
            "badges": array(BADGE),
            "lots": array(obj({"points": INTEGER, "dated": INSTANT, "expires": INSTANT})),
            "pending": array(obj({"order_id": STRING, "points": INTEGER, "releases": INSTANT})),
        }
    ),
    "Members": obj({"members": array(obj(MEMBER))}),
    "LedgerPage": obj(
        {
            "member_id": STRING,
            "entries": array(
                obj(
                    {
                        "at": INSTANT,
                        "kind": STRING,
                        "points": INTEGER,
                        "pending": INTEGER,
                        "balance": INTEGER,
                        "event_id": {"type": ["string", "null"]},
                        "detail": {"type": ["string", "null"]},
                        "version": INTEGER,
                    }
                )
            ),
            "next_after_version": {"type": ["integer", "null"]},
        }
    ),
    "Tiers": obj(
        {
            "members_per_tier": {"type": "object", "additionalProperties": INTEGER},
            "changes_per_month": array(
                obj({"month": STRING, "upgrades": INTEGER, "downgrades": INTEGER})
            ),
        }
    ),
    "Churn": obj(
        {
            "as_of": INSTANT,
            "windows": obj({"active_days": INTEGER, "at_risk_days": INTEGER}),
            "members": obj(
                {
                    "active": INTEGER,
                    "at_risk": INTEGER,
                    "churned": INTEGER,
                    "never_purchased": INTEGER,
                }
            ),
            "repeat_purchase_rate": RATE,
            "months": array(
                obj(
                    {
                        "month": STRING,
                        "active_at_start": INTEGER,
                        "churned": INTEGER,
                        "churn_rate": RATE,
                        "reactivations": INTEGER,
                        "tier_upgrades": INTEGER,
                        "tier_downgrades": INTEGER,
                    }
                )
            ),
        }
    ),
    "Liability": obj(
        {
            "as_of": INSTANT,
            "point_value": STRING,
            "currency": STRING,
            "points_outstanding": INTEGER,
            "expiring_within_30_days": INTEGER,
            "expiring_within_90_days": INTEGER,
            "value_outstanding": STRING,
            "value_expiring_within_30_days": STRING,
            "value_expiring_within_90_days": STRING,
            "points_owed_by_members": INTEGER,
            "points_pending": INTEGER,
            "value_pending": STRING,
            "breakage_rate": RATE,
            "expected_cost": STRING,
        }
    ),
    "LiabilityHistory": obj(
        {
            "as_of": INSTANT,
            "currency": STRING,
            "months": array(
                obj(
                    {
                        "month": STRING,
                        "at": INSTANT,
                        "points_outstanding": INTEGER,
                        "points_pending": INTEGER,
                        "points_owed_by_members": INTEGER,
                        "breakage_rate": RATE,
                        "expected_cost": STRING,
                    }
                )
            ),
        }
    ),
    "Campaigns": obj(
        {
            "as_of": INSTANT,
            "campaigns": array(
                obj(
                    {
                        "id": STRING,
                        "applies_to": {"type": ["string", "null"]},
                        "starts": MAYBE_INSTANT,
                        "ends": MAYBE_INSTANT,
                        "members_reached": INTEGER,
                        "events_rewarded": INTEGER,
                        "points_issued": INTEGER,
                        "net_spend": DECIMAL,
                    }
                )
            ),
        }
    ),
    "Value": obj(
        {
            "as_of": INSTANT,
            "currency": STRING,
            "members_with_purchases": INTEGER,
            "orders": INTEGER,
            "net_spend": DECIMAL,
            "average_order_value": MAYBE_DECIMAL,
            "clv_average": MAYBE_DECIMAL,
            "clv_by_enrolment_month": array(
                obj({"month": STRING, "members": INTEGER, "clv_average": MAYBE_DECIMAL})
            ),
        }
    ),
    "Customers": obj(
        {
            "as_of": INSTANT,
            "customers": array(
                obj(
                    {
                        "member_id": STRING,
                        "orders": INTEGER,
                        "net_spend": DECIMAL,
                        "average_order_value": DECIMAL,
                        "first_purchase_at": INSTANT,
                        "last_purchase_at": INSTANT,
                        "clv": DECIMAL,
                    }
                )
            ),
            "next_after": {"type": ["string", "null"]},
        }
    ),
    "Cohorts": obj(
        {
            "as_of": INSTANT,
            "by": {"enum": ["purchase", "enrolment"]},
            "months": array(STRING),
            "cohorts": array(obj({"cohort": STRING, "members": INTEGER, "retention": array(RATE)})),
        }
    ),
    "Segments": obj(
        {
            "as_of": INSTANT,
            "segments": array(obj({"name": STRING, "members": INTEGER})),
            "rules": {"type": "object", "additionalProperties": STRING},
        }
    ),
    "SegmentMembers": obj(
        {
            "as_of": INSTANT,
            "segment": STRING,
            "members": array(
                obj(
                    {
                        "member_id": STRING,
                        "recency_score": {"type": "integer", "minimum": 1, "maximum": 5},
                        "frequency_score": {"type": "integer", "minimum": 1, "maximum": 5},
                        "monetary_score": {"type": "integer", "minimum": 1, "maximum": 5},
                        "orders": INTEGER,
                        "net_spend": DECIMAL,
                        "last_purchase_at": INSTANT,
                    }
                )
            ),
            "next_after": {"type": ["string", "null"]},
        }
    ),
    "Status": obj(
        {
            "store_position": INTEGER,
            "projections": {
                "type": "object",
                "additionalProperties": obj({"position": INTEGER, "behind": INTEGER}),
            },
            "member_events": obj({"position": INTEGER, "behind": INTEGER}),
            "inputs": {
                "type": "object",
                "additionalProperties": obj(
                    {
                        "applied": INTEGER,
                        "duplicate": INTEGER,
                        "rejected": INTEGER,
                        "dead_lettered": INTEGER,
                        "skipped": INTEGER,
                        "consumer_lag": {"type": ["integer", "null"]},
                    }
                ),
            },
            "kafka_error": STRING,
            "rebuilding": {"type": "boolean"},
        },
        required=["store_position", "projections", "member_events", "inputs", "rebuilding"],
    ),
    "Health": obj({"status": {"const": "ok"}}),
    "Ready": obj(
        {
            "ready": {"type": "boolean"},
            "store_position": INTEGER,
            "behind": {"type": "object", "additionalProperties": INTEGER},
            "reasons": array(STRING),
        },
        required=["ready", "reasons"],
    ),
}

AS_OF = {
    "name": "as_of",
    "in": "query",
    "required": False,
    "description": "RFC 3339 with an offset, from 1900-01-01 to before 9000-01-01; default now",
    "schema": {"type": "string"},
}


def integer(name: str, low: int, high: int, default: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }


AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "the page starts after this member id",
    "schema": {"type": "string", "maxLength": 64},
}
MEMBER_ID = {"name": "member_id", "in": "path", "required": True, "schema": STRING}


def json_response(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


ERRORS = {
    "400": json_response("Error", "a parameter is not valid: the error says which and why"),
    "401": json_response("Error", "LOYALTY_API_TOKEN is set and the request lacks it"),
    "503": json_response("Error", "the store is unavailable, or the read models are rebuilt"),
}
NOT_FOUND = {"404": json_response("Error", "no such member, or no such segment")}


def operation(
    summary: str,
    schema: str,
    parameters: list[dict[str, Any]] | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": json_response(schema, summary), **ERRORS, **(errors or {})},
        }
    }


def document() -> dict[str, Any]:
    member = operation(
        "A member as the read models hold it; with as_of, as of that instant from the event "
        "store (its events dated at or before it, then birthday, releases, expiry and tier "
        "review at it, in memory)",
        "Member",
        [MEMBER_ID, AS_OF],
        NOT_FOUND,
    )
    member["get"]["responses"]["200"] = {
        "description": "the member (MemberAsOf when as_of is given)",
        "content": {"application/json": {"schema": {"oneOf": [ref("Member"), ref("MemberAsOf")]}}},
    }
    paths = {
        "/members": operation(
            "Members by balance, highest first", "Members", [integer("limit", 1, 1000, 20)]
        ),
        "/members/{member_id}": member,
        "/members/{member_id}/ledger": operation(
            "A page of the member's ledger entries, oldest first",
            "LedgerPage",
            [MEMBER_ID, integer("limit", 1, 1000, 100), integer("after_version", 0, 2**63 - 1, 0)],
            NOT_FOUND,
        ),
        "/metrics/tiers": operation("Members per tier; tier moves per month", "Tiers", [AS_OF]),
        "/metrics/churn": operation(
            "Active, at-risk and churned members; churn and reactivations per month",
            "Churn",
            [AS_OF, integer("months", 1, 120, 12)],
        ),
        "/metrics/liability": operation(
            "Points outstanding, pending, expiring and owed; breakage and expected cost",
            "Liability",
            [AS_OF],
        ),
        "/metrics/liability/history": operation(
            "The liability at the end of each month",
            "LiabilityHistory",
            [AS_OF, integer("months", 1, 36, 12)],
        ),
        "/metrics/campaigns": operation(
            "Per campaign: members reached, events rewarded, points issued, net spend",
            "Campaigns",
            [AS_OF],
        ),
        "/metrics/value": operation("Customer value and CLV", "Value", [AS_OF]),
        "/metrics/cohorts": operation(
            "Retention by cohort month",
            "Cohorts",
            [
                AS_OF,
                integer("months", 1, 36, 12),
                {
                    "name": "by",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["purchase", "enrolment"], "default": "purchase"},
                },
            ],
        ),
        "/customers": operation(
            "Each member's value, by member id",
            "Customers",
            [AS_OF, integer("limit", 1, 1000, 100), AFTER],
        ),
        "/segments": operation("Members per RFM segment, with the rules", "Segments", [AS_OF]),
        "/segments/{name}/members": operation(
            "A segment's members, by member id",
            "SegmentMembers",
            [
                {"name": "name", "in": "path", "required": True, "schema": STRING},
                AS_OF,
                integer("limit", 1, 1000, 100),
                AFTER,
            ],
            NOT_FOUND,
        ),
        "/status": operation(
            "Store, projection and relay positions; per input topic accounting and lag",
            "Status",
        ),
        "/health": {
            "get": {
                "summary": "Liveness: the process answers",
                "security": [],
                "responses": {"200": json_response("Health", "alive")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: the store answers and the read models are current",
                "security": [],
                "responses": {
                    "200": json_response("Ready", "ready"),
                    "503": json_response("Ready", "not ready: the reasons say why"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loyalty ledger",
            "version": "1",
            "description": "Read models of the loyalty ledger: members, ledgers, metrics. "
            "Rules: docs/RULES.md; tables: projections/README.md.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Required only when LOYALTY_API_TOKEN is set; the probes and this document never.
        "security": [{"bearer": []}, {}],
    }
