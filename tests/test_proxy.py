"""Behind an HTTP proxy, traces still arrive (issue 9, item 2).

The sender's HTTP client (httpx) honours HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY; the
reachability check before a send, and `doctor`, must take the same way to the server, or the
sender stops at "cannot connect" forever while `doctor` says all is well (or the other way round).

The proxy here is a loopback forward proxy written in this file (absolute-URI requests, as a
corporate proxy gets them), and the Langfuse base URL uses a host name only that proxy can
resolve: a direct connection cannot reach it at all.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_delivery import assert_delivered_exactly_once, expected_turns
from transcript_factory import stop_event

PROXY_ONLY_HOST = "langfuse.behind-the-proxy.test"  # .test never resolves: only the proxy knows it
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD")


class ForwardProxy:
    """A plain HTTP forward proxy on 127.0.0.1: takes absolute-URI requests, resolves host names
    from its own table, forwards, relays the answer. Counts what went through it."""

    def __init__(self, hosts: dict[str, tuple[str, int]]):
        self.hosts = hosts
        self.seen: list[tuple[str, str]] = []  # (method, absolute URI)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append((self.command, self.path))
                target = urlsplit(self.path)
                if not target.scheme or not target.hostname:
                    self._answer(400, b"a forward proxy needs an absolute URI")
                    return
                where = proxy.hosts.get(f"{target.hostname}:{target.port or 80}")
                if where is None:
                    self._answer(502, f"proxy: unknown host {target.hostname}".encode())
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-") and k.lower() != "connection"}
                conn = http.client.HTTPConnection(*where, timeout=10)
                try:
                    conn.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _forward  # noqa: N815 - stdlib naming

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(langfuse_standin):
    p = ForwardProxy({f"{PROXY_ONLY_HOST}:3050": ("127.0.0.1", langfuse_standin.port)})
    yield p
    p.stop()


# ------------------------------------------------------------------------------ through the hook and the worker


def test_behind_a_proxy_the_worker_delivers_through_it(rig, langfuse_standin, proxy):
    rig.env.update(CC_LANGFUSE_BASE_URL=f"http://{PROXY_ONLY_HOST}:3050", HTTP_PROXY=proxy.url, NO_PROXY="localhost")
    t = rig.transcript()
    t.simple_turn("behind the proxy", "arrived")
    rig.hook(stop_event(t))
    expected = expected_turns(t)
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert any(m == "POST" and PROXY_ONLY_HOST in uri for m, uri in proxy.seen), proxy.seen
    assert rig.status()["last_error"] is None


def test_lowercase_proxy_variables_count_too(rig, langfuse_standin, proxy):
    rig.env.update(CC_LANGFUSE_BASE_URL=f"http://{PROXY_ONLY_HOST}:3050", all_proxy=proxy.url.replace("http://", ""))
    t = rig.transcript()
    t.simple_turn("all_proxy, no scheme", "arrived")
    rig.hook(stop_event(t))
    rig.wait_delivered(expected_turns(t))
    assert proxy.seen


def test_no_proxy_sends_directly(rig, langfuse_standin):
    # the proxy named here does not exist: only NO_PROXY gets the turn through
    rig.env.update(HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    t = rig.transcript()
    t.simple_turn("not through the proxy", "arrived")
    rig.hook(stop_event(t))
    rig.wait_delivered(expected_turns(t))


def test_a_dead_proxy_is_named_in_status_and_doctor(rig, langfuse_standin, proxy):
    proxy.stop()
    rig.env.update(CC_LANGFUSE_BASE_URL=f"http://{PROXY_ONLY_HOST}:3050", HTTPS_PROXY="http://bad", HTTP_PROXY=proxy.url)
    t = rig.transcript()
    t.simple_turn("proxy down", "kept")
    rig.hook(stop_event(t))
    error = rig.wait_failure("retry")
    assert f"127.0.0.1:{proxy.port}" in error["detail"] and "proxy" in error["detail"], error
    doctor = rig.cli("doctor")
    line = next(line for line in doctor.stdout.splitlines() if "server reachable" in line)
    assert "FAIL" in line and "proxy" in line and str(proxy.port) in line, doctor.stdout


def test_doctor_checks_the_server_and_the_keys_through_the_proxy(rig, langfuse_standin, proxy):
    rig.env.update(CC_LANGFUSE_BASE_URL=f"http://{PROXY_ONLY_HOST}:3050", HTTP_PROXY=proxy.url)
    doctor = rig.cli("doctor")
    reach = next(line for line in doctor.stdout.splitlines() if "server reachable" in line)
    keys = next(line for line in doctor.stdout.splitlines() if "keys accepted" in line)
    assert reach.strip().startswith("ok") and "proxy" in reach, doctor.stdout
    assert keys.strip().startswith("ok"), doctor.stdout
    assert [uri for _, uri in proxy.seen if "/api/public/" in uri], proxy.seen


def test_doctor_and_the_sender_agree_when_only_all_proxy_applies(rig, langfuse_standin, proxy):
    """urllib alone would use its own NO_PROXY rules (and ignore ALL_PROXY): doctor must take the
    sender's way. Here ALL_PROXY applies (urllib ignores it), so a direct check would wrongly fail."""
    rig.env.update(CC_LANGFUSE_BASE_URL=f"http://{PROXY_ONLY_HOST}:3050", ALL_PROXY=proxy.url)
    doctor = rig.cli("doctor")
    reach = next(line for line in doctor.stdout.splitlines() if "server reachable" in line)
    assert reach.strip().startswith("ok"), doctor.stdout


# ------------------------------------------------------------------------------ the same rules as httpx


HOSTS = [
    "langfuse.example.com",
    "example.com",
    "sub.langfuse.example.com",
    "localhost",
    "127.0.0.1",
    "::1",
    "10.0.0.5",
    "LangFuse.Example.COM",
    "lf",
]
NO_PROXY_ENTRIES = [
    ".example.com",
    "example.com",
    "langfuse.example.com:3050",
    "*",
    "localhost",
    "127.0.0.1",
    "::1",
    "http://langfuse.example.com",
    "https://lf",
    "10.0.0.0/8",
    " spaced.example.com ",
    "",
    "*.example.com",
    "lf:8080",
    "LF",
]
PROXIES = ["proxy:3128", "http://p:1", "https://p2:443", "http://user:pw@p3:8080", "socks5://s:1080"]


@st.composite
def proxy_env(draw):
    env = {}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        if draw(st.booleans()):
            env[name.upper() if draw(st.booleans()) else name] = draw(st.sampled_from(PROXIES + [""]))
    if draw(st.booleans()):
        env["NO_PROXY" if draw(st.booleans()) else "no_proxy"] = ",".join(draw(st.lists(st.sampled_from(NO_PROXY_ENTRIES), max_size=4)))
    return env


@st.composite
def target_url(draw):
    host = draw(st.sampled_from(HOSTS))
    host = f"[{host}]" if ":" in host else host
    port = draw(st.sampled_from([None, 80, 443, 3050, 8080]))
    return f"{draw(st.sampled_from(['http', 'https']))}://{host}" + (f":{port}" if port else "") + "/api/public/otel"


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=proxy_env(), url=target_url())
def test_proxy_for_picks_what_httpx_picks(env, url, monkeypatch):
    import httpx
    from claude_code_langfuse.delivery import proxy_for
    from httpx._utils import URLPattern, get_environment_proxies

    with monkeypatch.context() as mp:
        for name in PROXY_VARS:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        mounts = get_environment_proxies()
        try:
            patterns = dict(sorted({URLPattern(k): v for k, v in mounts.items()}.items()))
        except Exception:  # httpx itself would refuse to start with this environment
            assume(False)
        want = next((proxy for pattern, proxy in patterns.items() if pattern.matches(httpx.URL(url))), None)
        assert proxy_for(url) == want, (env, url)
