"""Property-based run of the JSON API against its own OpenAPI description: no 5xx, ever.

schemathesis generates valid and invalid requests for every operation of
/api/openapi.json and calls the Flask app directly (WSGI), with the token configured;
the process routes are also tried on a real seeded process, so the actions run; the bulk
route runs its generated filters (dry runs and real ones) on the seeded processes.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_seed import TOKEN, bearer, seed
from support import make_flask_app
from proc.demo.models import Precheck, Upload
from proc.status import ProcessStatus as S

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def run(operation, mode, *, path_parameters=None, examples=15):
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(headers=bearer(), checks=CHECKS)

    check()


def test_api_answers_every_generated_request_without_a_server_error():
    app = make_flask_app(TOKEN, inspect_timeout=0.05)
    for status in S:
        seed(Precheck, status, age=500)
    seed(Upload, S.RUNNING, age=5)
    target = seed(Precheck, S.FAILURE, age=900, errors=["boom"])
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app, headers=bearer())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /api/status", "GET /api/procs", "GET /api/timings",
                                               "POST /api/procs/{collection}/{id}/cancel",
                                               "POST /api/procs/bulk", "GET /api/bulk-actions"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run(operation, mode)
        if "{id}" in operation.path:
            run(operation, GenerationMode.POSITIVE, examples=5,
                path_parameters={"collection": "precheck", "id": str(target)})
