"""The OpenAI-compatible chat generator against a small local HTTP server the tests start."""

from __future__ import annotations

import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from geodiffloc.models.g3 import OpenAIChatGenerator, Query, References


class _Server:
    """Answers POST /v1/chat/completions with the next scripted reply."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                kind, payload = outer.script.pop(0) if outer.script else ("ok", "(0, 0)")
                if kind == "sleep":
                    time.sleep(payload)
                    kind, payload = "ok", "(1.0, 1.0)"
                if kind == "status":
                    self.send_response(payload)
                    self.end_headers()
                    return
                data = (payload if kind == "raw" else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": payload}}]}))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    self.wfile.write(data.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


REFS = References(np.array([[48.85, 2.35], [45.76, 4.84], [43.3, 5.37]]),
                  np.array([0.9, 0.8, 0.7]))
Q = Query(0, torch.zeros(4), "a cafe terrace by the Seine")


def test_good_answers_become_candidates_and_prompts_follow_the_paper(monkeypatch):
    monkeypatch.setenv("G3_TEST_KEY", "sekret")
    script = [("ok", '{"latitude": 48.86, "longitude": 2.34}\n{"latitude": 45.7, '
                     '"longitude": 4.8}'),
              ("ok", "I think it is Lyon: 45.76° N, 4.84° E.")]
    with _Server(script) as srv:
        gen = OpenAIChatGenerator(srv.url, "tiny-lmm", api_key_env="G3_TEST_KEY",
                                  ref_counts=(0, 2), timeout_s=5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to warn about
            cands = gen.generate(Q, REFS, 2)
    assert [(c.lat, c.lon, c.prompt) for c in cands] == [
        (48.86, 2.34, "rag0"), (45.7, 4.8, "rag0"), (45.76, 4.84, "rag2")]
    first, second = (r["messages"][0]["content"] for r in srv.requests)
    assert srv.requests[0]["model"] == "tiny-lmm"
    assert "a cafe terrace by the Seine" in first and "For your reference" not in first
    # the second prompt carries exactly the two most similar references
    assert "(48.8500, 2.3500), (45.7600, 4.8400)" in second and "43.3000" not in second
    assert srv.headers[0].get("Authorization") == "Bearer sekret"


def test_malformed_answers_are_skipped_with_a_warning():
    script = [("ok", "I cannot tell where this is."),
              ("raw", "this is not json"),
              ("raw", json.dumps({"choices": []})),
              ("ok", "(10.5, 20.25)")]
    with _Server(script) as srv:
        gen = OpenAIChatGenerator(srv.url, "m", api_key_env=None, ref_counts=(0, 1, 2, 3),
                                  timeout_s=5, max_retries=0)
        with pytest.warns(UserWarning) as rec:
            cands = gen.generate(Q, REFS, 3)
    assert [(c.lat, c.lon) for c in cands] == [(10.5, 20.25)]
    msgs = " | ".join(str(w.message) for w in rec)
    assert "no coordinates" in msgs and "rag0" in msgs and "unreadable" in msgs
    assert "choices" in msgs
    assert "Authorization" not in srv.headers[0]


def test_timeouts_and_server_errors_are_retried_then_skipped():
    # first prompt: a 503 then a good answer (retried); second: always too slow
    script = [("status", 503), ("ok", "(1.5, 2.5)"),
              ("sleep", 1.0), ("sleep", 1.0)]
    with _Server(script) as srv:
        gen = OpenAIChatGenerator(srv.url, "m", api_key_env=None, ref_counts=(0, 5),
                                  timeout_s=0.3, max_retries=1, backoff_s=0.01)
        with pytest.warns(UserWarning, match="gave up after 2 attempt"):
            cands = gen.generate(Q, REFS, 1)
    assert [(c.lat, c.lon, c.prompt) for c in cands] == [(1.5, 2.5, "rag0")]
    assert len(srv.requests) == 4


def test_a_client_error_is_not_retried_and_an_unreachable_server_never_raises():
    with _Server([("status", 401)]) as srv:
        gen = OpenAIChatGenerator(srv.url, "m", api_key_env=None, ref_counts=(0,),
                                  max_retries=3, backoff_s=0.01)
        with pytest.warns(UserWarning, match="HTTP 401"):
            assert gen.generate(Q, REFS, 1) == []
        assert len(srv.requests) == 1
    gen = OpenAIChatGenerator("http://127.0.0.1:9/v1", "m", api_key_env=None, ref_counts=(0,),
                              max_retries=0, timeout_s=1)
    with pytest.warns(UserWarning, match="skipped"):
        assert gen.generate(Q, REFS, 1) == []
    with pytest.raises(ValueError, match="http"):
        OpenAIChatGenerator("localhost:8000", "m")


def test_an_image_query_is_sent_as_a_data_url(tmp_path):
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(p)
    with _Server([("ok", "(3.0, 4.0)")]) as srv:
        gen = OpenAIChatGenerator(srv.url, "m", api_key_env=None, ref_counts=(1,))
        cands = gen.generate(Query(0, torch.zeros(4), str(p)), REFS, 1)
    assert [(c.lat, c.lon) for c in cands] == [(3.0, 4.0)]
    content = srv.requests[0]["messages"][0]["content"]
    assert content[0]["type"] == "text" and "this image" in content[0]["text"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
