"""The GPT-guided judge against a stub OpenAI-compatible server on 127.0.0.1, the report and
the evaluate command.

The stub answers with a score computed from the request (so the test knows the right one) and
misbehaves on cue: a marker in the prediction text makes it return 500/429/400, malformed JSON,
an unparseable reply, a score out of [0, 1], or answer too slowly, once or always.
"""
import collections
import hashlib
import http.server
import io
import json
import re
import sys
import threading
import time

import pytest

from hawk_jax.eval import cli as eval_cli
from hawk_jax.eval import evaluate
from hawk_jax.eval import judge as judge_lib
from hawk_jax.eval import report as report_lib

API_KEY = "test-key-123"
MODEL = "stub-judge"
CLIENT_TIMEOUT_S = 0.5


def expected_score(dimension: str, prediction: str) -> float:
  digest = hashlib.sha256(f"{dimension}|{prediction}".encode()).digest()
  return int.from_bytes(digest[:4], "big") % 1001 / 1000


class StubServer:
  """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that counts what it is asked."""

  def __init__(self):
    self.lock = threading.Lock()
    self.requests = []  # (dimension, prediction, parsed body, headers)
    self.seen = collections.Counter()
    self.refuse_response_format = False  # an endpoint without structured output
    stub = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *args):
        pass

      def do_POST(self):
        try:
          stub.handle(self)
        except (BrokenPipeError, ConnectionResetError):
          pass  # The client gave up waiting (the timeout cases).

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
    self.thread.start()
    self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join(timeout=5)

  def count(self, dimension=None, marker=""):
    with self.lock:
      return sum(1 for d, p, _, _ in self.requests
                 if (dimension is None or d == dimension) and marker in p)

  @staticmethod
  def _send(handler, status, body: bytes, headers=()):
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for name, value in headers:
      handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)

  def handle(self, handler):
    body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
    user = body["messages"][1]["content"]
    dimension = re.search(r"Score the (\w+) of the prediction", user).group(1)
    prediction = re.search(r"Predicted (?:answer|description): (.*)\n", user).group(1)
    with self.lock:
      self.requests.append((dimension, prediction, body, dict(handler.headers)))
      self.seen[(dimension, prediction)] += 1
      attempt = self.seen[(dimension, prediction)]
    if handler.path != "/v1/chat/completions":
      return self._send(handler, 404, b'{"error": "not found"}')
    if handler.headers.get("Authorization") != f"Bearer {API_KEY}":
      return self._send(handler, 401, b'{"error": "bad key"}')
    if self.refuse_response_format and "response_format" in body:
      return self._send(handler, 400, b'{"error": {"message": "response_format json_schema is '
                        b'not supported by this model", "param": "response_format"}}')
    score = expected_score(dimension, prediction)
    content = json.dumps({"score": score})
    if "[flaky500]" in prediction and attempt == 1:
      return self._send(handler, 500, b'{"error": "overloaded"}')
    if "[rate429]" in prediction and attempt == 1:
      return self._send(handler, 429, b'{"error": "slow down"}', [("Retry-After", "0")])
    if "[bad400]" in prediction:
      return self._send(handler, 400, b'{"error": "context too long"}')
    if "[badjson]" in prediction and attempt == 1:
      return self._send(handler, 200, b'{"choices": [{"message": ')
    if "[slow]" in prediction and attempt == 1:
      time.sleep(CLIENT_TIMEOUT_S * 2)
    if "[garbage]" in prediction:
      content = "I cannot judge this without seeing the video."
    elif "[range]" in prediction or ("[once_range]" in prediction and attempt == 1):
      content = "{'score': 1.5}"
    elif "[fence]" in prediction:
      content = f'```json\n{{"score": {score}}}\n```'
    elif "[pydict]" in prediction:
      content = f"Here is my evaluation: {{'score': {score}}}"
    elif "[bare]" in prediction:
      content = f"I would rate it {score}"
    reply = {"id": "x", "object": "chat.completion", "model": body["model"],
             "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                          "finish_reason": "stop"}]}
    self._send(handler, 200, json.dumps(reply).encode())


@pytest.fixture
def server(monkeypatch):
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")
  monkeypatch.setenv("no_proxy", "127.0.0.1")
  stub = StubServer()
  yield stub
  stub.close()


def make_judge(server, cache_path, model=MODEL, progress=False, progress_file=None,
               **overrides):
  config = dict(model=model, base_url=server.base_url, api_key=API_KEY, cache_path=cache_path,
                workers=4, timeout_s=CLIENT_TIMEOUT_S, max_attempts=3, backoff_s=0.01,
                max_backoff_s=0.05)
  config.update(overrides)
  return judge_lib.Judge(judge_lib.JudgeConfig(**config), progress=progress,
                         progress_file=progress_file)


def _has_openai():
  try:
    import openai  # noqa: F401
  except ImportError:
    return False
  return True


BACKENDS = ["http", pytest.param("openai", marks=pytest.mark.skipif(
    not _has_openai(), reason="the openai SDK is not installed (pip install openai)"))]


# Marker -> requests per dimension it takes; None where the item must fail.
SUCCEEDING = {"": 1, "[flaky500]": 2, "[rate429]": 2, "[badjson]": 2, "[slow]": 2,
              "[once_range]": 2, "[fence]": 1, "[pydict]": 1, "[bare]": 1}
FAILING = {"[garbage]": 3, "[range]": 3, "[bad400]": 1}


def records_with_markers(task="description"):
  records = []
  for i, marker in enumerate(list(SUCCEEDING) + list(FAILING)):
    records.append({"task": task, "video": f"Videos/ucf/clip{i}.mp4",
                    "question": "What is unusual in the video?" if task == "qa" else "",
                    "reference": f"A man breaks into car number {i} at night.",
                    "prediction": f"Someone opens car {i} ({task}) {marker}".strip()})
  return records


def test_parse_score_accepts_the_usual_reply_shapes():
  parse = judge_lib.parse_score
  assert parse('{"score": 0.8}') == 0.8
  assert parse("{'score': 0.5}") == 0.5
  assert parse('```json\n{"score": 0.25}\n```') == 0.25
  assert parse("```\n{'score': 1}\n```") == 1.0
  assert parse('Sure. {"Score": "0.4"} is my answer') == 0.4
  assert parse("Score: 0.7") == 0.7
  assert parse("0.9") == 0.9
  assert parse("I would give it 0.35.") == 0.35
  assert parse("{'score': 0}") == 0.0


@pytest.mark.parametrize("reply", [
    '{"score": 1.7}', "{'score': -0.1}", "score: -0.2", "Score: 7", '{"score": NaN}',
    '{"score": true}', '{"rating": 0.3}', "good answer", "8/10", "", "{'score': 'high'}"])
def test_parse_score_refuses_unreadable_or_out_of_range_replies(reply):
  with pytest.raises(judge_lib.ScoreParseError):
    judge_lib.parse_score(reply)


def test_messages_carry_the_evaluator_role_reference_prediction_and_qa_question():
  qa = judge_lib.judge_messages("detail", "qa", "He steals a bike.", "A man takes a bike.",
                                "What happens?")
  desc = judge_lib.judge_messages("consistency", "description", "He steals a bike.",
                                  "A man takes a bike.", "Describe the video.")
  for messages in (qa, desc):
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "evaluator of generated answers for video-based question-answer pairs" in (
        messages[0]["content"])
    assert "{'score'" in messages[0]["content"]
    assert "He steals a bike." in messages[1]["content"]
    assert "A man takes a bike." in messages[1]["content"]
  assert "What happens?" in qa[1]["content"]
  assert "Describe the video." not in desc[1]["content"]
  prompts = {judge_lib.system_prompt(d) for d in judge_lib.DIMENSIONS}
  assert len(prompts) == 3
  with pytest.raises(ValueError, match="unknown judge dimension"):
    judge_lib.system_prompt("fluency")
  with pytest.raises(ValueError, match="unknown task"):
    judge_lib.judge_messages("detail", "caption", "a", "b")


@pytest.mark.parametrize("backend", BACKENDS)
def test_judge_scores_retries_counts_failures_and_caches(server, tmp_path, backend):
  cache = str(tmp_path / "cache.jsonl")
  records = records_with_markers("qa")
  judge = make_judge(server, cache, backend=backend)
  assert judge.backend == backend
  result = judge.score(records)

  markers = list(SUCCEEDING) + list(FAILING)
  for dim in judge_lib.DIMENSIONS:
    for i, marker in enumerate(markers):
      got = result.scores[dim][i]
      if marker in FAILING:
        assert got is None, (dim, marker)
      else:
        assert got == expected_score(dim, records[i]["prediction"]), (dim, marker)
  # Retries happened exactly as the misbehaviour demands; failures were asked max_attempts times
  # (a 400 only once: the same request would be refused again).
  for marker, per_dim in {**SUCCEEDING, **FAILING}.items():
    if marker:
      assert server.count(marker=marker) == 3 * per_dim, marker
  expected_requests = 3 * (sum(SUCCEEDING.values()) + sum(FAILING.values()))
  assert server.count() == result.requests == expected_requests
  assert {(f.item, f.dimension, f.attempts) for f in result.failures} == {
      (markers.index(m), d, n) for m, n in FAILING.items() for d in judge_lib.DIMENSIONS}
  garbage = next(f for f in result.failures if f.item == markers.index("[garbage]"))
  assert "no score found" in garbage.reason and garbage.video.endswith(".mp4")
  assert "outside [0, 1]" in next(
      f.reason for f in result.failures if f.item == markers.index("[range]"))
  assert "HTTP 400" in next(
      f.reason for f in result.failures if f.item == markers.index("[bad400]"))

  # Means are over the scored items only; failures are counted, not scored as 0.
  summary = result.summary()
  for dim in judge_lib.DIMENSIONS:
    scored = [expected_score(dim, r["prediction"]) for r, m in zip(records, markers)
              if m not in FAILING]
    assert summary[dim] == {"mean": pytest.approx(sum(scored) / len(scored)),
                            "scored": len(SUCCEEDING), "failed": len(FAILING)}

  # What went over the wire.
  _, _, body, headers = server.requests[0]
  assert body["model"] == MODEL and body["temperature"] == 0
  headers = {name.lower(): value for name, value in headers.items()}  # the SDK sends lower case
  assert headers["authorization"] == f"Bearer {API_KEY}"
  assert "What is unusual in the video?" in body["messages"][1]["content"]
  # Structured output: a JSON schema holding the score.
  assert body["response_format"]["type"] == "json_schema"
  schema = body["response_format"]["json_schema"]["schema"]
  assert schema["properties"] == {"score": {"type": "number"}} and schema["required"] == ["score"]

  # A rerun reads every scored answer from the cache and asks only the failed ones again; the
  # cache is shared by both clients.
  before = server.count()
  rerun = make_judge(server, cache, backend="http").score(records)
  assert rerun.cache_hits == 3 * len(SUCCEEDING)
  assert server.count() - before == rerun.requests == 3 * sum(FAILING.values())
  assert rerun.scores == result.scores
  # The cache is keyed by the model too: another model is asked afresh.
  other = make_judge(server, cache, model="other-judge").score(records[:1])
  assert other.requests == 3 and other.cache_hits == 0


def test_cache_survives_a_truncated_last_line(server, tmp_path):
  cache = tmp_path / "cache.jsonl"
  records = records_with_markers()[:2]
  make_judge(server, str(cache)).score(records)
  with open(cache, "a") as f:
    f.write('{"key": "abc", "sco')  # What a killed run can leave behind.
  before = server.count()
  result = make_judge(server, str(cache)).score(records)
  assert server.count() == before and result.cache_hits == 6


def test_a_refused_key_stops_the_run_with_a_clear_error(server, tmp_path):
  judge = make_judge(server, None, api_key="wrong")
  with pytest.raises(judge_lib.JudgeSetupError, match="API key was refused"):
    judge.score(records_with_markers()[:2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_key_stops_the_run_with_either_client(server, backend):
  judge = make_judge(server, None, api_key="wrong", backend=backend)
  with pytest.raises(judge_lib.JudgeSetupError, match="API key was refused"):
    judge.score(records_with_markers()[:1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_endpoint_refusing_response_format_is_asked_with_the_prompt_alone(
    server, tmp_path, backend):
  server.refuse_response_format = True
  records = records_with_markers()[:3]  # plain, [flaky500], [rate429]
  judge = make_judge(server, str(tmp_path / "cache.jsonl"), backend=backend, workers=1)
  result = judge.score(records)
  assert not result.failures
  for dim in judge_lib.DIMENSIONS:
    assert result.scores[dim] == [expected_score(dim, r["prediction"]) for r in records]
  bodies = [body for _, _, body, _ in server.requests]
  # One refused request (with a schema), then the rest of the run asks without one.
  assert "response_format" in bodies[0]
  assert all("response_format" not in body for body in bodies[1:])
  assert result.requests == len(bodies) == 1 + 3 * (1 + 2 + 2)
  # Without the fallback, a plain 400 is still an item failure after one request.
  server.refuse_response_format = False
  bad = make_judge(server, None, backend=backend).score(
      [dict(records[0], prediction="Someone opens a car [bad400]")])
  assert bad.requests == 3 and len(bad.failures) == 3


def test_openai_backend_without_the_sdk_names_the_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
  config = judge_lib.JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1",
                                 backend="openai")
  with pytest.raises(ImportError, match="pip install openai"):
    judge_lib.Judge(config)
  auto = judge_lib.Judge(judge_lib.JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1"))
  assert auto.backend == "http"
  with pytest.raises(ValueError, match="backend 'grpc'"):
    judge_lib.JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", backend="grpc")


@pytest.mark.skipif(not _has_openai(), reason="the openai SDK is not installed")
def test_auto_backend_prefers_the_openai_sdk():
  judge = judge_lib.Judge(judge_lib.JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1"))
  assert judge.backend == "openai"


def _cache_entries(path):
  return sorted(path.read_text().splitlines())


def test_progress_bar_shows_requests_cache_hits_and_failures(server, tmp_path):
  plain = [{"task": "description", "reference": f"A man breaks into car {i}.",
            "prediction": f"Someone opens car {i}"} for i in range(3)]
  garbage = {"task": "description", "reference": "A fight.",
             "prediction": "Two men argue [garbage]"}
  records = plain + [garbage]
  warm = tmp_path / "bar.jsonl"
  make_judge(server, str(warm)).score(plain[:2])  # 2 items x 3 dimensions cached
  (tmp_path / "quiet.jsonl").write_text(warm.read_text())

  out = io.StringIO()
  shown = make_judge(server, str(warm), progress=True, progress_file=out).score(records)
  final = out.getvalue().split("\r")[-1]
  assert "4/4" in final
  assert "cached=6" in final and "failed=3" in final
  # One plain item asked once per dimension, the unparseable one 3 attempts per dimension.
  assert f"requests={3 + 3 * 3}" in final and shown.requests == 12
  assert shown.cache_hits == 6 and len(shown.failures) == 3
  assert re.search(r"<\d\d:\d\d|<\?", final)  # tqdm's ETA

  # The bar changes neither the results nor the cache.
  quiet = make_judge(server, str(tmp_path / "quiet.jsonl")).score(records)
  assert quiet.scores == shown.scores and quiet.failures == shown.failures
  assert _cache_entries(warm) == _cache_entries(tmp_path / "quiet.jsonl")


def test_progress_bar_is_off_when_stderr_is_not_a_tty(server, tmp_path):
  out = io.StringIO()  # not a TTY
  make_judge(server, None, progress=None, progress_file=out).score(records_with_markers()[:1])
  assert out.getvalue() == ""


def test_config_checks(monkeypatch):
  monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
    judge_lib.JudgeConfig.from_env("gpt-4o")
  with pytest.raises(ValueError, match="must start with http"):
    judge_lib.JudgeConfig(model="m", base_url="localhost:8000")
  monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
  config = judge_lib.JudgeConfig.from_env("m")
  assert config.url == "http://127.0.0.1:9/v1/chat/completions" and config.api_key is None
  assert "api_key" not in repr(judge_lib.JudgeConfig(model="m", api_key="secret"))


def test_evaluate_predictions_reports_both_tasks_with_judge_failures(server, tmp_path):
  records = records_with_markers("description") + records_with_markers("qa")
  judge = make_judge(server, str(tmp_path / "cache.jsonl"))
  report = evaluate.evaluate_predictions(records, str(tmp_path / "out"), judge=judge)

  saved = json.loads((tmp_path / "out" / "report.json").read_text())
  assert saved == json.loads(json.dumps(report))
  n = len(SUCCEEDING) + len(FAILING)
  for task in ("description", "qa"):
    task_report = saved["tasks"][task]
    assert task_report["items"] == n
    assert set(task_report["bleu"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}
    assert task_report["bleu_nltk"] is not None
    for dim in judge_lib.DIMENSIONS:
      assert task_report["judge"][dim]["failed"] == len(FAILING)
    assert len(task_report["judge_failures"]) == 3 * len(FAILING)
  task_recs = [r for r in records if r["task"] == "qa"]
  assert saved["tasks"]["qa"]["bleu"] == pytest.approx(
      evaluate.bleu_lib.bleu([r["reference"] for r in task_recs],
                            [r["prediction"] for r in task_recs]))

  markdown = (tmp_path / "out" / "report.md").read_text()
  assert "(A) Anomaly video description generation" in markdown
  assert "(B) Anomaly video question-answering" in markdown
  assert "| HAWK (paper) | 0.270 | 0.139 | 0.074 | 0.043 | 0.283 | 0.320 | 0.218 |" in markdown
  assert "| HAWK (paper) | 0.319 | 0.179 | 0.112 | 0.073 | 0.840 | 0.794 | 0.753 |" in markdown
  failed = f"{len(FAILING)}/{n}"
  assert f"reasonability {failed}, detail {failed}, consistency {failed}" in markdown
  assert markdown.count("| Ours |") == 2 and markdown.count("| Ours, NLTK BLEU |") == 2
  mean = saved["tasks"]["qa"]["judge"]["detail"]["mean"]
  assert f"{mean:.3f}" in markdown
  # The prompts are named as this project's wording, not the paper's text.
  assert markdown.count("this project's wording of the paper's protocol") == 2
  assert "not the paper's own prompt text" in markdown


def test_report_marks_missing_task_and_skipped_judge(tmp_path):
  text = "a man runs across the street at night"
  records = [{"task": "description", "reference": text, "prediction": text}]
  report = evaluate.evaluate_predictions(records, str(tmp_path), judge_skipped="--no_judge")
  markdown = report_lib.report_markdown(report)
  assert "No predictions for this task." in markdown
  assert "Judge: not run (--no_judge)." in markdown
  assert "| Ours | 1.000 | 1.000 | 1.000 | 1.000 | – | – | – |" in markdown


def write_predictions(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_cli_runs_the_judge_from_the_environment(server, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
  monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
  preds = write_predictions(tmp_path / "p.jsonl", records_with_markers("qa")[:3])
  out = tmp_path / "out"
  argv = ["--predictions", preds, "--out", str(out), "--judge_model", MODEL,
          "--judge_timeout", str(CLIENT_TIMEOUT_S), "--judge_attempts", "3"]
  assert eval_cli.main(argv) == 0
  printed = capsys.readouterr().out
  assert "| HAWK (paper) | 0.319" in printed and "| Ours |" in printed
  assert "failed (unscored) items — reasonability 0/3" in printed
  assert (out / "report.json").exists() and (out / "report.md").exists()
  assert (out / "judge_cache.jsonl").exists()
  asked = server.count()
  assert eval_cli.main(argv) == 0  # The rerun is answered from the cache.
  assert server.count() == asked


def test_cli_skips_the_judge_without_an_endpoint(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
  records = records_with_markers("description")[:2]
  preds = write_predictions(tmp_path / "p.jsonl", records)
  assert eval_cli.main(["--predictions", preds, "--out", str(tmp_path / "o")]) == 0
  captured = capsys.readouterr()
  assert "judge skipped: OPENAI_BASE_URL is not set" in captured.err
  assert "| Ours |" in captured.out
  monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
  assert eval_cli.main(["--predictions", preds, "--out", str(tmp_path / "o"), "--no_judge"]) == 0
  assert "judge skipped: --no_judge" in capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ('{"task": "caption", "reference": "a", "prediction": "b"}', "key 'task' is 'caption'"),
    ('{"task": "qa", "reference": "a", "prediction": "b"}', "needs a non-empty 'question'"),
    ('{"task": "description", "prediction": "b"}', "'reference' is missing or empty"),
    ('{"task": "description", "reference": "a"}', "'prediction' is missing"),
    ('{"task": "description", "reference": "a", "prediction": 3}', "'prediction' must be a str"),
    ('{"task": "description", ', "not valid JSON"),
    ('["description"]', "expected a JSON object"),
])
def test_bad_prediction_lines_are_named(tmp_path, capsys, line, message):
  good = '{"task": "description", "reference": "a", "prediction": "b"}'
  path = tmp_path / "p.jsonl"
  path.write_text(good + "\n\n" + line + "\n")
  with pytest.raises(ValueError, match=re.escape(message)) as err:
    evaluate.load_predictions(str(path))
  assert f"{path}:3:" in str(err.value)
  assert eval_cli.main(["--predictions", str(path), "--out", str(tmp_path / "o"),
                        "--no_judge"]) == 2
  assert f"{path}:3:" in capsys.readouterr().err
