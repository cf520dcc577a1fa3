"""What `sgpo train` shows of the orchestrator's judge alarm, and reads of the judge's LLM usage."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import start_http_server

from sgpo.judge.metrics import JudgeMetrics
from sgpo.launch.judge_usage import read_judge_usage
from sgpo.launch.train import judge_alarm_note, orchestrator_stop_reason
from sgpo.orchestrator.alarm import write_status
from tests.support import free_port


def test_the_progress_line_shows_the_alarm_and_the_stop(tmp_path: Path) -> None:
    assert judge_alarm_note(tmp_path) == "" and orchestrator_stop_reason(tmp_path) == ""  # no file yet
    status = tmp_path / "orchestrator_status.json"
    write_status(status, {"judge_failed_share": 0.25, "judge_alarm": False, "stopped_reason": ""})
    assert judge_alarm_note(tmp_path) == ""
    write_status(
        status, {"judge_failed_share": 0.875, "judge_alarm": True, "stopped_reason": "judge alarm: x"}
    )
    assert "JUDGE FAILING: 88% of recent judgements failed" in judge_alarm_note(tmp_path)
    assert orchestrator_stop_reason(tmp_path) == "judge alarm: x"
    assert json.loads(status.read_text())["judge_alarm"] is True
    status.write_text("{half a fi")  # a torn read is no alarm, not a crash
    assert judge_alarm_note(tmp_path) == ""


def test_judge_usage_is_read_from_the_judges_metrics() -> None:
    m = JudgeMetrics()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=m.registry)
    try:
        assert read_judge_usage(port) == {}  # a judge that asked no LLM
        m.llm_calls.labels("ok").inc(3)
        m.llm_tokens.labels("prompt").inc(1200)
        m.llm_tokens.labels("completion").inc(90)
        m.llm_cost.inc(0.0017)
        m.llm_config_errors.labels("temperature").inc(2)
        u = read_judge_usage(port)
        assert (u["prompt_tokens"], u["completion_tokens"], u["config_errors"]) == (1200, 90, 2)
        assert u["cost"] == 0.0017 and u["calls"] == {"ok": 3}
    finally:
        server.shutdown()
        thread.join(5)
    assert read_judge_usage(port) == {}  # unreachable: nothing, not an error
