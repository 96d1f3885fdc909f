"""The fast path of redaction against the straightforward one (hypothesis).

redaction.py saves work four ways: a short text holding none of the literals any rule needs is
left alone after two searches; one scan finds which token needles occur (each needle found from
its rarest character) and only the rules with such a needle run; the client-command rule runs only
when a client's name occurs (the same kind of scan); and a result is reused when the same string
comes back. None of this may change what is redacted: on random text with planted secrets (the
corpus's positive cases, needles without a valid body, overlapping needles, JSON escapes),
Redactor.redact_text must give exactly what the reference below gives. The reference runs every
rule on every text, every token rule whatever needles it holds, the client-command rule without
its trigger, and never reuses a result.
"""

import re
from unittest import mock

from claude_code_langfuse import redaction as R
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redaction_corpus import EXACT, NEGATIVE, POSITIVE


class StraightRedactor(R.Redactor):
    """Every rule on every text, no needle scans, no reuse of results."""

    def redact_text(self, text):
        if not self.enabled or not isinstance(text, str) or not text:
            return text, 0
        with mock.patch.object(R, "_CLI_TRIGGER_RE", re.compile("")):  # the trigger always fires
            return self._redact(text, gate=False)  # every rule, however short the text

    @classmethod
    def _tokens(cls, text):
        total = 0
        for kind, _needles, regex in R._TOKEN_RULES:  # every rule, no needle scan
            text, count = cls._token_rule(text, kind, regex)
            total += count
        return text, total


PLANTED = (
    [template.replace("@@", secret) for _, template, secret in POSITIVE]
    + [text for text, _ in EXACT]
    + [  # formats the corpus has only inside other cases
        "LANGFUSE_SECRET_KEY sk-lf-1a2b3c4d5e6f7a8b",
        "runner GR1348941abcdefghij0123456789 registered",
        "SLACK xoxb-1234567890-abcdefABCDEF done",
        "maps key=AIza" + "Sy0A1b2C3d4E5f6G7h8I9j0K_l1M2n3-o4P" + ".",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "hf org api_org_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh" + " ok",
    ]
)
NEEDLES = sorted(R._ALL_NEEDLES) + list(R._CLI_NEEDLES)
# needles running into each other, bodies that are almost valid, markers already there
TRICKY = [
    "xoxapp-",
    "ops_eyJ",
    "sk-ant-sk-lf-",
    "ghp_ghp_",
    "AKIAKIA",
    "SKSKSK",
    "Q~Q~",
    "dapidapi",
    "AGE-SECRET-KEY-1AGE-SECRET-KEY-1",
    "[REDACTED:openai-key]",
    "\\n",
    '\\"',
    "=",
    ": ",
    "mysql -p",
    "docker login -p ",
    "https://user:",
    "@host",
    "Bearer ",
    "password=",
]
FILLER = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~:/= \n\"'"), max_size=40)
BODY = st.text(alphabet=st.sampled_from("abcdef0123456789ABCDEFXYZxyz_-"), min_size=0, max_size=70)
PIECE = st.one_of(
    st.sampled_from(PLANTED),
    st.sampled_from(NEGATIVE),
    st.sampled_from(TRICKY),
    st.tuples(st.sampled_from(NEEDLES), BODY).map("".join),
    FILLER,
)
TEXTS = st.lists(PIECE, max_size=12).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS)
@example(text="key sk-ant-" + "a1" * 12 + " xoxb-" + "1" * 12 + " ghp_" + "a" * 36)
@example(text="xoxapp-1-abcdefghijklmnop")  # "xapp-" starts inside "xox"
def test_fast_path_redacts_exactly_what_the_straightforward_path_does(text):
    straight = StraightRedactor().redact_text(text)
    fast = R.Redactor().redact_text(text)
    assert fast == straight
    assert R.Redactor().redact_text(text) == straight  # reused result: the same
    # inside a JSON-encoded transcript line, and with a user pattern beside the built-in rules
    line = '{"content":"%s"}' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    assert R.Redactor().redact_text(line) == StraightRedactor().redact_text(line)
    custom, tagged = [r"corp-[0-9]{6}"], text + " corp-123456"
    assert R.Redactor(extra_patterns=custom).redact_text(tagged) == StraightRedactor(extra_patterns=custom).redact_text(tagged)


def test_the_planted_secrets_reach_every_token_rule():
    for kind, needles, regex in R._TOKEN_RULES:
        assert any(regex.search(text) for text in PLANTED), (kind, needles)


def test_every_planted_secret_alone_and_among_needles():
    for text in PLANTED:
        for variant in (text, "x " + " ".join(NEEDLES) + " " + text, text + "\n" + text.upper()):
            assert R.Redactor().redact_text(variant) == StraightRedactor().redact_text(variant), variant


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.one_of(st.sampled_from(NEEDLES), st.sampled_from(TRICKY), FILLER), max_size=10))
def test_the_needle_scan_reports_exactly_the_needles_that_occur(pieces):
    text = "".join(pieces)
    assert R._TOKEN_SCAN.found(text) == {n for n in R._ALL_NEEDLES if n in text}
    assert (R._CLI_TRIGGER_RE.search(text) is not None) == any(n in text for n in R._CLI_NEEDLES)


def test_every_token_rule_needs_one_of_its_needles():
    # The scan may skip a rule only because its regex cannot match without one of its needles:
    # each rule's regex, matched anywhere in a text that holds every other rule's needles but
    # none of its own, finds nothing. (A regex starting with one of its needles shows it too.)
    for kind, needles, regex in R._TOKEN_RULES:
        others = " ".join(n + "A1b2" * 20 for n in sorted(R._ALL_NEEDLES) if not any(o in n or n in o for o in needles))
        assert regex.search(others) is None, (kind, needles)


def test_reused_results_stay_within_their_bound():
    cache = R._ResultCache()
    big = "x" * (R._RESULTS_MAX_CHARS // 8)
    for i in range(12):
        text = big + str(i)
        cache.put(text, text, 0)
        assert cache._chars <= R._RESULTS_MAX_CHARS
    assert cache.get(big + "11") == (big + "11", 0, len(big) + 2)
    assert cache.get(big + "0") is None  # the least recently used went first
    cache.put("y" * R._RESULTS_MAX_CHARS, "", 0)  # larger than a quarter of the bound: never kept
    assert cache.get("y" * R._RESULTS_MAX_CHARS) is None


def test_a_result_is_reused_only_under_the_same_rules():
    text = "deploy id corp-424242 with ghp_" + "Ab1" * 12
    plain = R.Redactor().redact_text(text)
    custom = R.Redactor(extra_patterns=[r"corp-[0-9]{6}"]).redact_text(text)
    assert plain == ("deploy id corp-424242 with [REDACTED:github-token]", 1)
    assert custom == ("deploy id [REDACTED:custom] with [REDACTED:github-token]", 2)
    assert R.Redactor(enabled=False).redact_text(text) == (text, 0)
