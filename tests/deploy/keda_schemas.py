"""JSON schemas of the KEDA resources soundhive uses (keda.sh/v1alpha1 ScaledObject and
TriggerAuthentication), restated from KEDA's CRDs and the redis-streams scaler's documented
metadata, strict (no unknown fields): kubernetes-validate has no schemas for CRDs."""

_NAME_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}}
METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "namespace": {"type": "string"}, "labels": {"type": "object"},
    "annotations": {"type": "object"}}, "additionalProperties": False}
_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}

REDIS_STREAMS_METADATA = {
    "type": "object",
    "required": ["stream", "consumerGroup", "lagCount"],
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "pattern": "^[^:]+:[0-9]+$"},
        "host": {"type": "string"}, "port": _DIGITS,
        "usernameFromEnv": {"type": "string"}, "passwordFromEnv": {"type": "string"},
        "stream": {"type": "string"}, "consumerGroup": {"type": "string"},
        "pendingEntriesCount": _DIGITS, "streamLength": _DIGITS,
        "lagCount": _DIGITS, "activationLagCount": _DIGITS,
        "databaseIndex": _DIGITS, "enableTLS": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
}

def _resource(kind: str, spec: dict) -> dict:
    """A KEDA resource's schema: its apiVersion, kind, metadata and the given spec, no more."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": kind},
                       "metadata": METADATA, "spec": spec},
    }


SCALED_OBJECT = _resource("ScaledObject", {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "additionalProperties": False, "properties": {
                                       "name": {"type": "string"},
                                       "kind": {"type": "string"},
                                       "apiVersion": {"type": "string"},
                                       "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "name": {"type": "string"}, "behavior": {"type": "object"}}},
                    "scalingModifiers": {"type": "object"}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "redis-streams"},
                        "name": {"type": "string"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "useCachedMetrics": {"type": "boolean"},
                        "metadata": REDIS_STREAMS_METADATA,
                        "authenticationRef": _NAME_REF,
                    }}},
            },
        })

TRIGGER_AUTHENTICATION = _resource("TriggerAuthentication", {
            "type": "object", "additionalProperties": False, "properties": {
            "secretTargetRef": {"type": "array", "items": {
                "type": "object", "required": ["parameter", "name", "key"],
                "additionalProperties": False, "properties": {
                    "parameter": {"enum": ["username", "password", "tls", "ca", "cert", "key"]},
                    "name": {"type": "string"}, "key": {"type": "string"}}}},
            "env": {"type": "array"},
        }})

SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
           ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION}
