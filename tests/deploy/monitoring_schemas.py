"""JSON schemas of the Prometheus Operator resources soundhive ships (monitoring.coreos.com/v1
PodMonitor and PrometheusRule, deploy/k8s/components/monitoring), restated from the operator's
CRDs for the fields they define, strict (no unknown fields): kubernetes-validate has no schemas
for CRDs."""

from keda_schemas import METADATA

_STRING = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_LIST = {"type": "array"}
_OBJECT = {"type": "object"}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}


def _resource(kind: str, spec: dict) -> dict:
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"},
                       "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
    }


_ENDPOINT = {"type": "object", "additionalProperties": False, "properties": {
    "port": _STRING, "portNumber": {"type": "integer"}, "targetPort": {},
    "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
    "params": _OBJECT, "interval": _DURATION, "scrapeTimeout": _DURATION,
    "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
    "trackTimestampsStaleness": {"type": "boolean"}, "filterRunning": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"}, "followRedirects": {"type": "boolean"},
    "proxyUrl": _STRING, "relabelings": _LIST, "metricRelabelings": _LIST,
    "basicAuth": _OBJECT, "bearerTokenSecret": _OBJECT, "authorization": _OBJECT,
    "oauth2": _OBJECT, "tlsConfig": _OBJECT}}

POD_MONITOR = _resource("PodMonitor", {
    "type": "object", "required": ["selector", "podMetricsEndpoints"],
    "additionalProperties": False, "properties": {
        "jobLabel": _STRING, "podTargetLabels": {"type": "array", "items": _STRING},
        "selector": {"type": "object", "additionalProperties": False, "properties": {
            "matchLabels": _STRING_MAP, "matchExpressions": _LIST}},
        "namespaceSelector": _OBJECT, "podMetricsEndpoints": {
            "type": "array", "minItems": 1, "items": _ENDPOINT},
        "sampleLimit": {"type": "integer"}, "targetLimit": {"type": "integer"},
        "labelLimit": {"type": "integer"}, "labelNameLengthLimit": {"type": "integer"},
        "labelValueLengthLimit": {"type": "integer"}, "keepDroppedTargets": {"type": "integer"},
        "attachMetadata": _OBJECT, "scrapeClass": _STRING, "scrapeProtocols": _LIST,
        "bodySizeLimit": _STRING}})

_RULE = {"type": "object", "required": ["expr"], "additionalProperties": False,
         "oneOf": [{"required": ["alert"]}, {"required": ["record"]}], "properties": {
             "alert": _STRING, "record": _STRING, "expr": {"type": ["string", "integer"]},
             "for": _DURATION, "keep_firing_for": _DURATION, "labels": _STRING_MAP,
             "annotations": _STRING_MAP}}

PROMETHEUS_RULE = _resource("PrometheusRule", {
    "type": "object", "additionalProperties": False, "properties": {
        "groups": {"type": "array", "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                "query_offset": _DURATION, "limit": {"type": "integer"}, "labels": _STRING_MAP,
                "partial_response_strategy": {"type": "string", "pattern": "^(?i:abort|warn)?$"},
                "rules": {"type": "array", "items": _RULE}}}}}})

SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
           ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE}
