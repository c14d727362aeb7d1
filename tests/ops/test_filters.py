"""One filter everywhere: durations, GET /api/procs with every filter key, sorts and cursor
paging, bad input naming the field, and the page's list view keeping the filter in its URL."""
from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from api_seed import seed
from proc.cli import cli
from proc.demo.models import Entry, Precheck, Upload
from proc.timeutil import InvalidDuration, parse_duration
from proc.ops.filters import Filter, FilterError
from proc.status import ProcessStatus as S


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800),
                                           ("45", 45), ("1.5h", 5400), (" 10M ", 600), (0, 0), (2.5, 2.5)])
def test_durations_are_written_one_way_everywhere(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds", [0, 0.25, 1e-07, 1234567.891, 90, 5400, 86400 * 3, 36500 * 86400])
def test_a_duration_is_written_back_in_the_same_syntax_without_exponents(seconds):
    from proc.timeutil import SYNTAX_PATTERN, format_duration

    text = format_duration(seconds)
    assert SYNTAX_PATTERN.fullmatch(text), text
    assert abs(parse_duration(text) - seconds) < 1e-6


@pytest.mark.parametrize("text", ["-5m", "5x", "1h30m", "", "h", "1 h", "nan", "inf", True, None, [1]])
def test_malformed_or_negative_durations_are_refused_saying_the_syntax(text):
    with pytest.raises(InvalidDuration, match="90s, 15m, 1h, 2d"):
        parse_duration(text, "older_than")


def ids(body) -> set[str]:
    return {item["id"] for item in body["items"]}


def test_several_statuses_repeated_or_comma_separated(client):
    failed = seed(Precheck, S.FAILURE)
    pending = seed(Upload, S.PENDING)
    seed(Precheck, S.SUCCESS)
    want = {str(failed), str(pending)}
    assert ids(client.get("/api/procs?status=FAILURE&status=PENDING").get_json()) == want
    body = client.get("/api/procs?status=FAILURE,PENDING").get_json()
    assert ids(body) == want and body["filter"] == {"status": ["FAILURE", "PENDING"]}


def test_q_is_a_case_insensitive_plain_substring_of_the_step_or_the_errors(client):
    in_error = seed(Entry, S.FAILURE, errors=["older", "cannot parse a.txt: Unexpected END of file"])
    in_step = seed(Precheck, S.RUNNING, current_process_step="parsing a.txt (2/3)")
    seed(Entry, S.FAILURE, errors=["cannot parse abtxt"])  # "a.txt" as a regex would match it
    assert ids(client.get("/api/procs?q=a.txt").get_json()) == {str(in_error), str(in_step)}
    assert ids(client.get("/api/procs?q=end OF FILE").get_json()) == {str(in_error)}
    assert ids(client.get("/api/procs?q=(2/3)").get_json()) == {str(in_step)}
    for text in ("(", "[a-", "*", ".*", "\\"):  # regex syntax is plain text here: no error, no match-all
        response = client.get("/api/procs", query_string={"q": text})
        assert response.status_code == 200 and len(response.get_json()["items"]) <= 1


def test_older_than_and_newer_than_are_durations_since_the_last_status_change(client):
    old = seed(Precheck, S.FAILURE, age=7200)
    middle = seed(Precheck, S.FAILURE, age=1800)
    new = seed(Precheck, S.FAILURE, age=30)
    assert ids(client.get("/api/procs?older_than=1h").get_json()) == {str(old)}
    assert ids(client.get("/api/procs?newer_than=15m").get_json()) == {str(new)}
    assert ids(client.get("/api/procs?older_than=10m&newer_than=3600").get_json()) == {str(middle)}


def test_ids_and_kind_select_processes(client):
    a, b = seed(Precheck, S.FAILURE), seed(Upload, S.FAILURE)
    seed(Precheck, S.FAILURE)
    body = client.get(f"/api/procs?ids=precheck/{a},upload/{b}").get_json()
    assert ids(body) == {str(a), str(b)}
    assert ids(client.get(f"/api/procs?ids=precheck/{a}&ids=upload/{b}&kind=upload").get_json()) == {str(b)}


def test_sort_attempt_pages_through_every_match_once_highest_attempt_first(client):
    for n in range(7):
        seed(Precheck, S.FAILURE, attempt=n % 3 + 1, age=10 + n)
        seed(Upload, S.FAILURE, attempt=n % 2 + 1, age=10 + n)
    seed(Precheck, S.SUCCESS, attempt=9)
    seen, attempts, cursor = [], [], None
    while True:
        body = client.get("/api/procs", query_string={"status": "FAILURE", "sort": "attempt", "limit": 3,
                                                      **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [i["id"] for i in body["items"]]
        attempts += [i["attempt"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 14
    assert attempts == sorted(attempts, reverse=True)


def test_paging_with_q_and_several_statuses_keeps_the_filter(client):
    want = {str(seed(Entry, S.FAILURE, errors=[f"disk full #{n}"], age=n)) for n in range(5)}
    want |= {str(seed(Precheck, S.PENDING, current_process_step="Disk FULL, waiting", age=n)) for n in range(4)}
    seed(Entry, S.FAILURE, errors=["other"])
    seed(Precheck, S.RUNNING, current_process_step="disk full")
    seen, cursor = [], None
    while True:
        args = {"status": ["FAILURE", "PENDING"], "q": "disk full", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/procs", query_string=args).get_json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) and set(seen) == want


@pytest.mark.parametrize("query, parameter", [
    ("status=FAILURE,BOGUS", "status"), ("kind=nope", "kind"), ("older_than=-5m", "older_than"),
    ("newer_than=5x", "newer_than"), ("older_than=1h30m", "older_than"), ("sort=age", "sort"),
    ("ids=precheck/zzz", "ids"), ("ids=nosuch/0123456789abcdef01234567", "ids"), ("q=" + "x" * 201, "q"),
    ("q=a%00b", "q"),
])
def test_bad_filters_answer_400_naming_the_parameter(client, query, parameter):
    response = client.get(f"/api/procs?{query}")
    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter


def test_a_cursor_of_one_sort_is_refused_for_the_other(client):
    for _ in range(3):
        seed(Precheck, S.FAILURE)
    cursor = client.get("/api/procs?limit=1").get_json()["next_cursor"]
    response = client.get(f"/api/procs?limit=1&sort=attempt&cursor={cursor}")
    assert response.status_code == 400 and response.get_json()["parameter"] == "cursor"
    assert "sort=last_change" in response.get_json()["error"]


def _cursor(items) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(items).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _cursor(["attempt", float("inf"), "precheck", '{"$oid": "0123456789abcdef01234567"}']),
    _cursor(["attempt", 10 ** 30, "precheck", '{"$oid": "0123456789abcdef01234567"}']),
    _cursor(["attempt", -1, "precheck", '{"$oid": "0123456789abcdef01234567"}']),
    _cursor(["attempt", "3", "precheck", '{"$oid": "0123456789abcdef01234567"}']),
    _cursor(["attempt", 1.5, "precheck", '{"$oid": "0123456789abcdef01234567"}']),
    _cursor(["attempt", 1, "precheck", '"\\ud800"']),
    _cursor(["attempt", 1, "precheck", '{"$regex": "."}']),
    _cursor(["attempt", 1, ["precheck"], '1']),
    "WyJhdHRlbXB0Iiwg" + "W1tb" * 2000,  # base64 of deeply nested lists, too long to be a cursor
])
def test_a_forged_cursor_answers_400_never_500(client, cursor):
    seed(Precheck, S.FAILURE)
    response = client.get("/api/procs", query_string={"sort": "attempt", "cursor": cursor})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["parameter"] == "cursor"


def test_a_deeply_nested_cursor_within_the_length_answers_400():
    from api.listing import decode_cursor
    from api.errors import ApiError

    nested = _cursor(["attempt", 1, "precheck", "[" * 300 + "]" * 300])
    with pytest.raises(ApiError) as caught:
        decode_cursor(nested, "attempt")
    assert caught.value.parameter == "cursor"


def test_filter_parse_refuses_unknown_keys_naming_them():
    with pytest.raises(FilterError) as caught:
        Filter.parse({"status": ["FAILURE"], "colour": "red"})
    assert caught.value.field == "colour"
    assert Filter.parse(Filter.parse({"status": "FAILURE,PENDING", "older_than": 3600}).as_dict()).older_than == 3600


def test_the_list_view_shows_the_filters_and_keeps_them_in_its_links(client):
    for n in range(4):
        seed(Entry, S.FAILURE, errors=["cannot parse x.broken"], age=100 + n)
    seed(Entry, S.SUCCESS)
    html = client.get("/projects/admin/check-status/procs?status=FAILURE&q=parse&older_than=1m&limit=2").get_data(
        as_text=True)
    assert 'value="FAILURE" checked' in html and 'name="q" size="18" value="parse"' in html
    assert 'name="older_than" size="5" placeholder="1h" value="1m"' in html
    assert "Retry all 4 matching" in html
    next_link = html.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    assert "status=FAILURE" in next_link and "q=parse" in next_link and "older_than=1m" in next_link
    page2 = client.get(next_link).get_data(as_text=True)
    assert page2.count("/check-status/procs/entry/") == 2
    bad = client.get("/projects/admin/check-status/procs?older_than=soon")
    assert bad.status_code == 400 and "older_than must be a duration" in bad.get_data(as_text=True)


def test_datafix_prune_backups_takes_the_same_durations():
    runner = CliRunner()
    result = runner.invoke(cli, ["datafix", "prune-backups", "--older-than", "5x", "--yes"])
    assert result.exit_code == 2 and "90s, 15m, 1h, 2d" in result.output
    assert runner.invoke(cli, ["datafix", "prune-backups", "--older-than", "-1d", "--yes"]).exit_code == 2
    result = runner.invoke(cli, ["datafix", "prune-backups", "--older-than", "30d"], input="n\n")
    assert "older than 30d?" in result.output and result.exit_code == 1
