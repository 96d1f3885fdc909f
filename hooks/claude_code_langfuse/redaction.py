"""Secret redaction and field truncation, applied to every record before it is queued (nothing leaves the process unredacted)."""

from __future__ import annotations

import functools
import hashlib
import json
import re

# ============================================================================ redaction

# Transcripts are plaintext and hold secrets verbatim (cat .env, env dumps, curl commands):
# everything queued or sent passes through the Redactor first. Rules are anchored on literal
# needles and compiled once, so megabytes of tool output cost well under 0.5 s per MB.


class _LazyRe:
    """A regex compiled on first use: most rules never fire in a given hook run, and compiling
    all of them up front would cost every run several milliseconds."""

    __slots__ = ("_args", "_rx")

    def __init__(self, *args):
        self._args, self._rx = args, None

    def __getattr__(self, name: str):
        rx = self._rx
        if rx is None:
            rx = self._rx = re.compile(*self._args)
        return getattr(rx, name)


REDACTION_KINDS = (
    "private-key",
    "anthropic-key",
    "langfuse-secret-key",
    "openai-key",
    "github-token",
    "gitlab-token",
    "slack-token",
    "slack-webhook",
    "google-api-key",
    "stripe-key",
    "aws-access-key",
    "aws-secret-key",
    "jwt",
    "huggingface-token",
    "npm-token",
    "authorization",
    "bearer-token",
    "url-password",
    "basic-auth",
    "assignment",
    "secret-field",
    "custom",
)


def _marker(kind):
    return "[REDACTED:%s]" % kind


def _after(prefix_len):
    # Left word boundary checked after a literal prefix of this length, so the engine can
    # still jump straight to the literal.
    return r"(?<![A-Za-z0-9_\-][\s\S]{%d})" % prefix_len


# (kind, literals of which one must occur, regex). One scan per rule: each regex starts with a
# literal, which the engine finds far faster than a combined alternation could.
_TOKEN_RULES = tuple(
    (kind, needles, _LazyRe(pattern))
    for kind, needles, pattern in (
        ("anthropic-key", ("sk-ant-",), r"sk-ant-" + _after(7) + r"[A-Za-z0-9_\-]{16,}"),
        ("langfuse-secret-key", ("sk-lf-",), r"sk-lf-" + _after(6) + r"[A-Za-z0-9_\-]{8,}"),
        ("openai-key", ("sk-",), r"sk-" + _after(3) + r"(?!ant-|lf-)[A-Za-z0-9_\-]{20,}"),
        ("github-token", ("gh",), r"gh[pousr]_" + _after(4) + r"[A-Za-z0-9]{30,}"),
        ("github-token", ("github_pat_",), r"github_pat_" + _after(11) + r"[A-Za-z0-9_]{30,}"),
        ("gitlab-token", ("glpat-",), r"glpat-" + _after(6) + r"[A-Za-z0-9_\-]{20,}"),
        ("slack-token", ("xox",), r"xox[abeoprs]-" + _after(5) + r"[A-Za-z0-9\-]{10,}"),
        ("slack-token", ("xapp-",), r"xapp-" + _after(5) + r"[0-9]-[A-Za-z0-9\-]{10,}"),
        ("google-api-key", ("AIza",), r"AIza" + _after(4) + r"[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
        ("stripe-key", ("_live_", "_test_"), r"[sr]k_(?:live|test)_" + _after(8) + r"[0-9A-Za-z]{10,}"),
        ("stripe-key", ("whsec_",), r"whsec_" + _after(6) + r"[0-9A-Za-z]{20,}"),
        ("aws-access-key", ("AKIA", "ASIA", "ABIA", "ACCA"), r"A(?:KIA|SIA|BIA|CCA)" + _after(4) + r"[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("jwt", ("eyJ",), r"eyJ" + _after(3) + r"[A-Za-z0-9_\-]{7,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
        ("huggingface-token", ("hf_",), r"hf_" + _after(3) + r"[A-Za-z0-9]{30,}"),
        ("npm-token", ("npm_",), r"npm_" + _after(4) + r"[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    )
)

# One search answers "could any token rule match?" for the many short strings of a transcript;
# long texts use the per-rule literal checks instead (cheaper than an alternation over MBs).
_TOKEN_TRIGGER_RE = _LazyRe("|".join(sorted({re.escape(needle) for _, needles, _ in _TOKEN_RULES for needle in needles})))
_SHORT_TEXT = 4096

_SLACK_WEBHOOK_RE = _LazyRe(r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/)([A-Za-z0-9_/\-]{10,512})")

_PEM_BEGIN_RE = _LazyRe(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END_RE = _LazyRe(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_MAX_BODY = 64 * 1024
# A block cut off before its END line (head -c, truncated tool output): redact what follows.
_PEM_ORPHAN_BODY_RE = _LazyRe(r"[A-Za-z0-9+/=\\\s:,\-]{0,%d}" % _PEM_MAX_BODY)

# Case-insensitive rules below run on an ASCII-lowercased copy of the text.
_AUTH_HEADER_RE = _LazyRe(
    r"authorization(?<![a-z0-9_][\s\S]{13})"
    r"\\?[\"']?[ \t]{0,8}[:=][ \t]{0,8}\\?[\"']?"
    r"(?:(?P<scheme>bearer|basic|token|bot|apikey|negotiate)[ \t]+)?"
    r"(?P<cred>[^\s'\"\\,;]{1,8192})"
)
_BEARER_RE = _LazyRe(r"bearer(?<![a-z0-9_][\s\S]{6})[ \t]+(?P<cred>[a-z0-9\-._~+/]{16,8192}=*)")
_URL_PASSWORD_RE = _LazyRe(r"://(?P<user>[^\s:/?#@'\"<>\[\]\\]{0,256}):(?P<pw>[^\s/?#@'\"<>\\]{1,1024})@")
# curl -u / --user user:password (checked to be on a curl command line; `docker run -u 1000:1000`
# and `sort -u` are not credentials).
_CURL_USER_RE = _LazyRe(
    r"-(?<![^\s'\"][\s\S])(?:-user|u)(?:[ \t]+|=)(?P<q>['\"]?)"
    r"(?P<user>[^\s:'\"]{1,256}):(?P<pw>[^\s'\"]{1,1024})"
)
_ASSIGN_KEY_RE = _LazyRe(
    r"(?:pass|secret|token|key|pwd|auth)[a-z0-9_.\-]{0,60}"
    r"(?P<q>\\?[\"']?)(?P<sep>[ \t]{0,8}(?:=>|:=|=(?!=)|:(?!:))[ \t]{0,8})"
)
_ASSIGN_VALUE_RE = _LazyRe(
    r"(?P<pfx>[bBrRuUfF]{0,2})(?:"
    r"\"(?P<dqv>[^\"\\\n]{0,8192}(?:\\[^\n][^\"\\\n]{0,8192}){0,64})\""
    # The same inside a JSON-encoded string (a raw transcript line): \"value\".
    r"|\\\"(?P<eqv>[^\"\\\n]{0,8192}(?:\\[^\"\n][^\"\\\n]{0,8192}){0,64})\\\""
    r"|'(?P<sqv>[^'\n]{0,8192})'"
    r")"
    r"|(?P<bare>[^\s'\"`,;\\]{1,8192})"
)
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_BRACKET_RE = _LazyRe(r"[()\[\]{}]")
_DIGIT_RE = _LazyRe(r"[0-9]")

_SECRET_LAST = frozenset(
    (
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "authorization",
        "auth",
        "authtoken",
        "credential",
    )
)
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token")
_KEY_QUALIFIERS = frozenset(
    (
        "api",
        "access",
        "secret",
        "private",
        "auth",
        "encryption",
        "signing",
        "master",
        "app",
        "session",
        "hmac",
        "webhook",
        "shared",
        "client",
    )
)
# Tokenizer and usage vocabulary ("eos_token", "max_token"): not credentials.
_NOT_SECRET_TOKEN_QUALIFIERS = frozenset(
    (
        "max",
        "min",
        "num",
        "total",
        "count",
        "input",
        "output",
        "cancel",
        "cancellation",
        "stop",
        "eos",
        "bos",
        "pad",
        "unk",
        "sep",
        "cls",
        "mask",
        "special",
        "start",
        "end",
        "next",
        "page",
        "continuation",
        "last",
        "first",
    )
)
_CODE_TYPE_WORDS = frozenset(
    (
        "str",
        "string",
        "int",
        "integer",
        "number",
        "bool",
        "boolean",
        "bytes",
        "any",
        "object",
        "unknown",
        "never",
        "void",
        "text",
        "varchar",
        "char",
        "secretstr",
        "float",
        "dict",
        "list",
        "optional",
        "required",
        "password",
        "self",
        "this",
        "cls",
        "env",
        "value",
        "val",
        "type",
    )
)
_PLACEHOLDER_WORDS = frozenset(
    (
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "required",
        "optional",
        "empty",
        "redacted",
        "hidden",
        "masked",
        "placeholder",
        "example",
        "todo",
        "tbd",
        "changeme",
        "secret",
        "password",
        "token",
        "string",
        "str",
    )
)
_PLACEHOLDER_CHARS = frozenset("xX*.-_#?… ")
_TEMPLATE_RE = _LazyRe(r"\$\(|\$\{?[A-Za-z_]|\{\{|\{[A-Za-z_][\w.]*\}|%\([a-z_]+\)s|%s")
_IDENT_RE = _LazyRe(r"[A-Za-z_$][A-Za-z0-9_$]*")
_DOTTED_RE = _LazyRe(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+")
_CAMEL_RE = _LazyRe(r"(?<=[a-z0-9])(?=[A-Z])")
_NAME_SPLIT_RE = _LazyRe(r"[^a-z0-9]+")


def _name_segments(name):
    name = _CAMEL_RE.sub("_", name.strip().strip("\"'$-")).lower()
    return [s for s in _NAME_SPLIT_RE.split(name) if s]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name):
    """True when a key / variable / header name says its value is a credential.

    Looks at the last word of the name so ``GITHUB_TOKEN``, ``clientSecret``, ``x-api-key``,
    ``PGPASSWORD`` match while ``input_tokens``, ``token_count``, ``PUBLIC_KEY``, ``sort_key``,
    ``eos_token`` and ``PWD`` do not.
    """
    segs = _name_segments(name)
    if not segs:
        return False
    last = segs[-1]
    prev = segs[-2] if len(segs) > 1 else ""
    if last in ("token", "auth") or last.endswith("token"):
        return prev not in _NOT_SECRET_TOKEN_QUALIFIERS
    if last in _SECRET_LAST or last.endswith(_SECRET_SUFFIXES):
        return True
    if last in ("pwd", "pass", "pw") and prev:
        return True
    if last == "key" and prev in _KEY_QUALIFIERS:
        return True
    return False


@functools.lru_cache(maxsize=1024)
def _is_authorization_name(name):
    segs = _name_segments(name)
    return bool(segs) and segs[-1] == "authorization"


def _is_placeholder(value):
    s = value.strip().strip("\"'")
    if not s:
        return True
    if "[REDACTED:" in s or "..." in s or "…" in s:
        return True
    if s[0] == "<":
        return True
    if _TEMPLATE_RE.search(s):
        return True
    low = s.lower()
    if low in _PLACEHOLDER_WORDS:
        return True
    if len(s) >= 3 and (len(set(s)) == 1 or set(s) <= _PLACEHOLDER_CHARS):
        return True
    if low.startswith("your") or low.endswith(("_here", "-here")):
        return True
    return False


_CREDENTIAL_CHAR_RE = _LazyRe(r"[0-9+/=_\-]|[a-z][A-Z]")


def _credential_like(value):
    """Random-looking rather than a prose word: 'Authorization: header' is not a credential."""
    return len(value) >= 16 or _CREDENTIAL_CHAR_RE.search(value) is not None


def _env_style(name):
    stripped = name.strip("\"'")
    if stripped.startswith("--"):
        return True
    return any(c.isalpha() for c in stripped) and stripped == stripped.upper()


@functools.lru_cache(maxsize=1024)
def _assignment_marker(name):
    if "".join(_name_segments(name)).endswith("secretaccesskey"):
        return _marker("aws-secret-key")
    return _marker("assignment")


def _bare_value_is_secret(name, value):
    """Unquoted values: tell a credential from a code reference (``token=token``,
    ``api_key=settings.API_KEY``, ``password: str``, ``get_token()``)."""
    if _BRACKET_RE.search(value):
        return False
    has_digit = _DIGIT_RE.search(value) is not None
    if not has_digit and _DOTTED_RE.fullmatch(value):
        return False
    if _IDENT_RE.fullmatch(value) and not has_digit:
        if _env_style(name):
            return True
        low = value.lower()
        if low in _CODE_TYPE_WORDS or (len(low) >= 3 and low in name.lower()):
            return False
        if "_" in value.strip("_") or "$" in value or _CAMEL_RE.search(value):
            return False
    return True


def _ascii_lower(text):
    low = text.lower()
    # A few non-ASCII characters (U+0130) lowercase to two code points; positions found in the
    # lowered copy must map 1:1 to the original.
    if len(low) != len(text):
        low = "".join(c.lower() if c.isascii() else c for c in text)
    return low


class Redactor:
    """Replaces credentials with ``[REDACTED:<kind>]``. Build once per run and reuse.

    ``extra_patterns``: user regexes (a list, or one string with one regex per line). The whole
    match is replaced by ``[REDACTED:custom]``, or only the named group ``secret`` when the
    pattern has one. An invalid pattern raises ValueError naming it.
    """

    def __init__(self, enabled=True, extra_patterns=None):
        self.enabled = bool(enabled)
        if isinstance(extra_patterns, str):
            extra_patterns = extra_patterns.splitlines()
        self._extra = []
        for pattern in extra_patterns or ():
            if not isinstance(pattern, str):
                raise ValueError("redaction pattern %r is not a string" % (pattern,))
            if not pattern.strip():
                continue
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError("invalid redaction pattern %r in CC_LANGFUSE_REDACT_PATTERNS: %s" % (pattern, exc)) from None
            if compiled.fullmatch(""):
                raise ValueError(
                    "redaction pattern %r matches the empty string; it would mark every "
                    "position of every text (CC_LANGFUSE_REDACT_PATTERNS)" % (pattern,)
                )
            self._extra.append(compiled)

    # -- public API ------------------------------------------------------------------------

    def redact_text(self, text):
        """Return (redacted text, number of secrets replaced)."""
        if not self.enabled or not isinstance(text, str) or not text:
            return text, 0
        total = 0
        for compiled in self._extra:
            text, n = self._apply_custom(compiled, text)
            total += n
        for rule in (self._pem, self._tokens, self._slack_webhook, self._url_password, self._curl_user):
            text, n = rule(text)
            total += n
        # The case-insensitive rules share one lowercased copy, redone only after a change.
        low = None
        for rule in (self._auth_header, self._bearer, self._assignments):
            if low is None:
                low = _ascii_lower(text)
            text, n = rule(text, low)
            if n:
                total += n
                low = None
        return text, total

    def redact_value(self, obj):
        """Walk a JSON-like value; return (new value, count). Dict keys are kept; the value of
        a key named like a credential (``password``, ``api_key``, ``Authorization``) is
        replaced whole. The input is not modified."""
        if not self.enabled:
            return obj, 0
        return self._walk(obj)

    # -- walking ---------------------------------------------------------------------------

    def _walk(self, obj):
        if isinstance(obj, str):
            return self.redact_text(obj)
        if isinstance(obj, dict):
            out, total = {}, 0
            for key, value in obj.items():
                if isinstance(key, str) and is_secret_name(key):
                    new, n = self._secret_field(key, value)
                else:
                    new, n = self._walk(value)
                out[key] = new
                total += n
            return out, total
        if isinstance(obj, (list, tuple)):
            out, total = [], 0
            for value in obj:
                new, n = self._walk(value)
                out.append(new)
                total += n
            return out, total
        return obj, 0

    def _secret_field(self, key, value):
        if isinstance(value, bool) or value is None:
            return value, 0
        if isinstance(value, (int, float)):
            return _marker("secret-field"), 1
        if not isinstance(value, str):
            return self._walk(value)
        if _is_placeholder(value):
            return value, 0
        if _is_authorization_name(key):
            scheme, sep, cred = value.strip().partition(" ")
            if sep and cred and " " not in cred.strip():
                if _is_placeholder(cred):
                    return value, 0
                kind = "bearer-token" if scheme.lower() == "bearer" else "authorization"
                return scheme + " " + _marker(kind), 1
            return _marker("authorization"), 1
        return _marker("secret-field"), 1

    # -- rules -----------------------------------------------------------------------------

    @staticmethod
    def _apply_custom(compiled, text):
        count = 0
        has_secret_group = "secret" in compiled.groupindex

        def repl(m):
            nonlocal count
            if has_secret_group and m.group("secret") is not None:
                start, end = m.span("secret")
                if start == end:
                    return m.group(0)
                count += 1
                return text[m.start() : start] + _marker("custom") + text[end : m.end()]
            if m.start() == m.end():
                return ""
            count += 1
            return _marker("custom")

        return compiled.sub(repl, text), count

    @staticmethod
    def _pem(text):
        if "PRIVATE KEY" not in text:
            return text, 0
        parts, pos, count = [], 0, 0
        end_match = None
        for begin in _PEM_BEGIN_RE.finditer(text):
            if begin.start() < pos:
                continue
            # Reuse the END found for an earlier BEGIN while it is still ahead: one forward
            # scan over the text however many BEGIN lines there are.
            if end_match is None or end_match.start() < begin.end():
                end_match = _PEM_END_RE.search(text, begin.end())
            if end_match is not None and end_match.start() - begin.end() <= _PEM_MAX_BODY:
                stop = end_match.end()
            else:
                stop = _PEM_ORPHAN_BODY_RE.match(text, begin.end()).end()
            parts.append(text[pos : begin.start()])
            parts.append(_marker("private-key"))
            pos = stop
            count += 1
        if not count:
            return text, 0
        parts.append(text[pos:])
        return "".join(parts), count

    @staticmethod
    def _tokens(text):
        total = 0
        if len(text) <= _SHORT_TEXT and _TOKEN_TRIGGER_RE.search(text) is None:
            return text, 0
        for kind, needles, regex in _TOKEN_RULES:
            if not any(needle in text for needle in needles):
                continue
            count = 0

            def repl(m, kind=kind):
                nonlocal count
                value = m.group(0)
                if kind == "openai-key":
                    body = value[3:]
                    if not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
                        return value
                count += 1
                return _marker(kind)

            text = regex.sub(repl, text)
            total += count
        return text, total

    @staticmethod
    def _slack_webhook(text):
        if "hooks.slack.com" not in text:
            return text, 0
        return _SLACK_WEBHOOK_RE.subn(lambda m: m.group(1) + _marker("slack-webhook"), text)

    @staticmethod
    def _spans(text, regex, decide, haystack=None):
        """Replace the span a rule's ``decide(text, match)`` returns: (start, end, replacement)
        or None to keep the text. The regex runs on ``haystack`` (the lowercased copy) if given."""
        if haystack is None:
            haystack = text
        parts, pos, count = [], 0, 0
        search_from = 0
        while True:
            m = regex.search(haystack, search_from)
            if m is None:
                break
            found = decide(text, m)
            if found is None:
                search_from = m.end() if m.end() > m.start() else m.start() + 1
                continue
            start, end, replacement = found
            parts.append(text[pos:start])
            parts.append(replacement)
            pos = end
            search_from = max(end, m.end())
            count += 1
        if not count:
            return text, 0
        parts.append(text[pos:])
        return "".join(parts), count

    @classmethod
    def _auth_header(cls, text, low):
        def decide(original, m):
            start, end = m.span("cred")
            cred = original[start:end]
            if _is_placeholder(cred):
                return None
            scheme = m.group("scheme")
            if not _credential_like(cred):
                return None
            kind = "bearer-token" if scheme == "bearer" else "authorization"
            return start, end, _marker(kind)

        return cls._spans(text, _AUTH_HEADER_RE, decide, low)

    @classmethod
    def _bearer(cls, text, low):
        def decide(original, m):
            start, end = m.span("cred")
            cred = original[start:end]
            if not any(c.isdigit() for c in cred) or _is_placeholder(cred):
                return None
            return start, end, _marker("bearer-token")

        return cls._spans(text, _BEARER_RE, decide, low)

    @classmethod
    def _url_password(cls, text):
        if "://" not in text:
            return text, 0

        def decide(original, m):
            start, end = m.span("pw")
            if _is_placeholder(original[start:end]):
                return None
            return start, end, _marker("url-password")

        return cls._spans(text, _URL_PASSWORD_RE, decide)

    @classmethod
    def _curl_user(cls, text):
        if "curl" not in text:
            return text, 0

        def decide(original, m):
            line_start = max(original.rfind("\n", 0, m.start()), m.start() - 2000, 0)
            if "curl" not in original[line_start : m.start()]:
                return None
            start, end = m.span("pw")
            quote = m.group("q")
            if quote:
                closing = original.find(quote, start, start + 1024)
                if closing != -1 and "\n" not in original[start:closing]:
                    end = closing
            if _is_placeholder(original[start:end]):
                return None
            return start, end, _marker("basic-auth")

        return cls._spans(text, _CURL_USER_RE, decide)

    @classmethod
    def _assignments(cls, text, low):
        def decide(original, m):
            # The regex matched from the keyword on; walk back to the start of the name.
            before = original[max(0, m.start() - 80) : m.start()]
            name_start = m.start() - (len(before) - len(before.rstrip(_NAME_CHARS)))
            name_end = m.start("q")
            name = original[name_start:name_end]
            # Authorization values ("Bearer <token>") belong to _auth_header.
            if not is_secret_name(name) or _is_authorization_name(name):
                return None
            v = _ASSIGN_VALUE_RE.match(original, m.end())
            if v is None:
                return None
            if v.group("bare") is not None:
                start, end = v.span("bare")
                value = original[start:end]
                if name_start and original[name_start - 1] in "?&":
                    # A URL query parameter ends at the next "&"; in a .env file "&" is data.
                    amp = value.find("&")
                    if amp != -1:
                        end -= len(value) - amp
                        value = value[:amp]
                if _is_placeholder(value):
                    return None
                stripped = value.rstrip(".,:)]}>")
                if stripped != value:
                    end -= len(value) - len(stripped)
                    value = stripped
                    if not value or _is_placeholder(value):
                        return None
                if not _bare_value_is_secret(name, value):
                    return None
            else:
                group = next(g for g in ("dqv", "eqv", "sqv") if v.group(g) is not None)
                start, end = v.span(group)
                value = original[start:end]
                if _is_placeholder(value):
                    return None
            return start, end, _assignment_marker(name)

        return cls._spans(text, _ASSIGN_KEY_RE, decide, low)


_DEFAULT_REDACTOR = Redactor()


def redact_text(text, redactor=None):
    """Module-level shortcut with the default rules: (text, count)."""
    return (redactor or _DEFAULT_REDACTOR).redact_text(text)


def redact_value(obj, redactor=None):
    return (redactor or _DEFAULT_REDACTOR).redact_value(obj)


# -- truncation ----------------------------------------------------------------------------


def truncate_field(value, max_chars):
    """Cut a string longer than ``max_chars``; return (value, info or None).

    info = {"original_length": n, "sha256": hex of the whole original as UTF-8} goes into the
    observation metadata so the full text can be matched later. ``max_chars`` None or <= 0
    means no limit. Run after redaction so the hash never covers a raw secret.
    """
    if not isinstance(value, str) or not max_chars or max_chars <= 0 or len(value) <= max_chars:
        return value, None
    # surrogatepass: json.loads accepts lone surrogates (\ud83d) that plain UTF-8 rejects.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    cut = value[:max_chars] + "…[truncated: %d chars, sha256 %s…]" % (len(value), digest[:16])
    return cut, {"original_length": len(value), "sha256": digest}


def truncate_json_value(value, max_chars):
    """Like truncate_field for any JSON-like value: strings are cut directly; other values are
    kept as they are unless their compact JSON form exceeds the limit, in which case that JSON
    text is cut and returned (a string) with the info."""
    if isinstance(value, str):
        return truncate_field(value, max_chars)
    if value is None or isinstance(value, (bool, int, float)) or not max_chars or max_chars <= 0:
        return value, None
    serialised = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(serialised) <= max_chars:
        return value, None
    return truncate_field(serialised, max_chars)


STATUS_MESSAGE_CHARS = 500

# -- lone surrogates ---------------------------------------------------------------------------

# JSON allows "\ud83d" without its partner (JSON.stringify writes one for a split emoji, and a
# model can put one in a tool call); json.loads hands it over as a lone surrogate, which UTF-8
# cannot encode. Left in a record it would stop the queue writer on every run, for good.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def scrub_text(text: str) -> str:
    """A string UTF-8 can encode: surrogate halves next to each other become their character,
    a lone one becomes U+FFFD."""
    if text.isascii() or _SURROGATE_RE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def scrub_surrogates(obj):
    """scrub_text over every string of a JSON-like value, dict keys included (a copy)."""
    if isinstance(obj, str):
        return scrub_text(obj)
    if isinstance(obj, dict):
        return {(scrub_text(k) if isinstance(k, str) else k): scrub_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_surrogates(v) for v in obj]
    return obj


def sanitize_record(record: dict, redactor: Redactor, max_chars: int) -> dict:
    """Lone surrogates out, then redact secrets and cut oversized fields in every text a record carries."""
    record.update(scrub_surrogates(record))  # names, inputs, outputs, metadata keys and values, trace fields
    total = 0
    for ob in record["observations"]:
        ob["name"], n = redactor.redact_text(ob["name"])
        total += n
        for fname in ("input", "output", "metadata", "status_message"):
            value = ob.get(fname)
            if value is None:
                continue
            value, n = redactor.redact_value(value)
            total += n
            if fname == "status_message" and isinstance(value, str):
                value = value[:STATUS_MESSAGE_CHARS]  # cut after redaction, never through a secret
            if fname in ("input", "output"):
                value, info = truncate_json_value(value, max_chars)  # after redaction: a cut must not split a secret
                if info:
                    ob["metadata"][f"{fname}_truncated"] = info
            ob[fname] = value
    trace = record["trace"]
    trace["name"], n = redactor.redact_text(trace["name"])
    total += n
    trace["metadata"], n = redactor.redact_value(trace["metadata"])
    total += n
    if total and record["observations"] and record["observations"][0]["parent_id"] is None:
        record["observations"][0]["metadata"]["redactions"] = total
    return record


def record_rev(record: dict) -> str:
    body = {k: v for k, v in record.items() if k not in ("queued_at", "rev")}
    # surrogatepass: never raises, whatever text a caller hands in
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:16]
