"""The redaction corpus (tests/redaction_corpus.py) both ways: every positive case loses its
secret, names its kind and keeps every other character; every negative case comes out
unchanged, as plain text, as a JSON-escaped transcript line and as a value in a tool input."""

import copy
import functools
import json

import pytest
from claude_code_langfuse.redaction import REDACTION_KINDS, redact_text, redact_value
from redaction_corpus import EXACT, NEGATIVE, POSITIVE, VALUES
from samples import SAMPLES as TRANSCRIPTS


def _ids(cases):
    return ["%d-%s" % (i, case[0]) for i, case in enumerate(cases)]


def test_corpus_is_well_formed():
    assert len(POSITIVE) >= 100 and len(NEGATIVE) >= 100
    for kind, template, secret in POSITIVE:
        assert kind in REDACTION_KINDS, kind
        assert template.count("@@") == 1, template
        assert len(secret) >= 6 and secret not in template, template
    # Every kind this module can name is exercised by at least one case here or in test_redaction.
    named = {kind for kind, _, _ in POSITIVE}
    assert named >= set(REDACTION_KINDS) - {
        "private-key" if any(k == "private-key" for k, _, _ in POSITIVE) else "",
        "jwt",
        "bearer-token",
        "authorization",
        "basic-auth",
        "slack-webhook",
        "google-api-key",
        "aws-access-key",
        "langfuse-secret-key",
        "secret-field",
        "custom",
    }


@pytest.mark.parametrize("kind, template, secret", POSITIVE, ids=_ids(POSITIVE))
def test_positive_case_loses_exactly_its_secret(kind, template, secret):
    text = template.replace("@@", secret)
    out, count = redact_text(text)
    assert secret not in out
    assert out == template.replace("@@", "[REDACTED:%s]" % kind)
    assert count == 1
    assert redact_text(out) == (out, 0), "redacting twice changed it again"


@pytest.mark.parametrize("kind, template, secret", POSITIVE, ids=_ids(POSITIVE))
def test_positive_case_inside_a_raw_transcript_line(kind, template, secret):
    # The worker redacts parsed values, but a raw line (dead letters, error text) carries the
    # same text JSON-escaped: quotes as \", newlines as \n.
    line = json.dumps({"type": "tool_result", "content": template.replace("@@", secret)})
    out, count = redact_text(line)
    assert json.dumps(secret)[1:-1] not in out
    assert count >= 1
    assert json.loads(out)["type"] == "tool_result"


@pytest.mark.parametrize("kind, template, secret", POSITIVE, ids=_ids(POSITIVE))
def test_positive_case_as_a_tool_input_value(kind, template, secret):
    value = {"name": "Bash", "input": {"command": template.replace("@@", secret), "description": "run it"}}
    out, count = redact_value(value)
    assert out["input"]["command"] == template.replace("@@", "[REDACTED:%s]" % kind)
    assert out["input"]["description"] == "run it" and out["name"] == "Bash"
    assert count == 1


@pytest.mark.parametrize("text, expected", EXACT, ids=[str(i) for i in range(len(EXACT))])
def test_exact_cases(text, expected):
    out, count = redact_text(text)
    assert out == expected
    assert count == expected.count("[REDACTED:")


@pytest.mark.parametrize("value, expected", VALUES, ids=[str(i) for i in range(len(VALUES))])
def test_credential_files_as_parsed_json(value, expected):
    snapshot = copy.deepcopy(value)
    out, count = redact_value(value)
    assert value == snapshot
    assert out == expected
    assert count == json.dumps(expected).count("[REDACTED:")


@pytest.mark.parametrize("text", NEGATIVE, ids=[str(i) for i in range(len(NEGATIVE))])
def test_negative_case_is_unchanged_in_every_form(text):
    assert redact_text(text) == (text, 0)
    line = json.dumps({"type": "text", "text": text})
    assert redact_text(line) == (line, 0)
    value = {"input": {"command": text}, "output": [text]}
    assert redact_value(value) == (value, 0)


def _first_tool_result(rows):
    for row in rows:
        content = (row.get("message") or {}).get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return row, block
    return None, None


@pytest.mark.skipif(not TRANSCRIPTS.is_dir(), reason="shared transcripts not available")
def test_whole_corpus_pasted_into_a_real_transcript_row():
    path = sorted(TRANSCRIPTS.glob("*.jsonl"))[0]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    row, block = _first_tool_result(rows)
    assert row is not None
    positives = [template.replace("@@", secret) for _, template, secret in POSITIVE]
    block["content"] = "\n".join(positives + NEGATIVE)
    before = copy.deepcopy(row)
    out, count = redact_value(row)
    assert count == len(POSITIVE)
    _, new_block = _first_tool_result([out])
    expected = [template.replace("@@", "[REDACTED:%s]" % kind) for kind, template, _ in POSITIVE]
    assert new_block["content"] == "\n".join(expected + NEGATIVE)
    new_block["content"] = block["content"]
    assert out == before


# --------------------------------------------------------------------------------------------
# Adversarial input for the newer rules: every one must finish (each match costs a bounded
# amount of work: weak-name values are checked where they start, a command's options end at the
# next command). Speed itself is not asserted here.


@functools.lru_cache(maxsize=1)
def _adversarial():
    size = 300 * 1000
    return {
        "mysql-attached": ("mysql -pX12 ", size // 12, size // 12),
        "docker-login": ("docker login -p x ", size // 18, None),
        # One command's options are read for 4096 characters.
        "flags-after-one-command": ("mysql " + "-pA12 " * (size // 6), 1, range(4096 // 6 - 1, 4096 // 6 + 2)),
        "long-flags": ("--token a1 ", size // 11, size // 11),
        "long-flags-no-value": ("--token ", size // 8, 0),
        "salt-run": ("salt=", size // 5, 0),
        "secret-name-run": ("secret_name=", size // 12, 0),
        "weak-long-runs": ("x_salt=" + "a" * 40, size // 47, 0),
        "sig-run": ("&sig=", size // 5, 0),
        "sig-one-long-value": ("&sig=" + "a1" * (size // 2), 1, 1),
        "amz-run": ("?x-amz-credential=", size // 18, None),
        "netrc-partial": ("machine a login b ", size // 18, 0),
        "define-run": ("define('a',", size // 11, 0),
        "escaped-newlines-and-tokens": ("\\nghp_", size // 6, 0),
        "prose-after-colon": ("password: word ", size // 15, 0),
        # Over 256 characters, any $VAR makes a value a template (the simple rule).
        "dollar-salts": ("password='" + "$a#" * (size // 3) + "'", 1, 0),
    }


@pytest.mark.parametrize("name", list(_adversarial()))
def test_adversarial_input_for_the_new_rules_completes(name):
    unit, times, expected_count = _adversarial()[name]
    text = unit * times
    out, count = redact_text(text)
    assert isinstance(out, str)
    if isinstance(expected_count, range):
        assert count in expected_count
    elif expected_count is not None:
        assert count == expected_count
        if expected_count == 0:
            assert out == text
