"""Property-based tests of every endpoint from the api's own OpenAPI schema (schemathesis and
hypothesis): no 5xx, answers that match the schema, and with a token set, no write without it."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from pipeline_helpers import Services, start_api
from schemathesis.checks import not_a_server_error, response_schema_conformance

TOKEN = "schema-token"
EXAMPLES = settings(max_examples=20, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.exclude(path="/events/stream")  # never ends:
            .get_all_operations()]                                            # see test_api.py


def test_every_endpoint_answers_within_its_schema(services: Services):
    services.start("features")
    services.start("classifier")
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN, SOUNDHIVE_API_MAX_UPLOAD_MB="1")
    found = operations(url)
    assert {op.path for op in found} >= {"/events", "/sources", "/classify",
                                         "/config/devicehive"}
    for operation in found:

        @given(case=operation.as_strategy())
        @EXAMPLES
        def answers(case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        answers()

    for operation in (op for op in found if op.method.upper() in ("PUT", "POST")):

        @given(case=operation.as_strategy())
        @EXAMPLES
        def refused(case) -> None:
            assert case.call().status_code in (401, 429)  # 429: too many wrong tokens

        refused()
