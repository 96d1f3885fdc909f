"""The turn grammar, on real transcripts and on 2.1.328-style fixtures.

Each test checks what a user would see in Langfuse: how many traces a session gives, what kind
each is, which generations / tools / agents / events sit under which parent, and the token counts.
Expectations come from the transcript format notes and /work/shared/transcripts/README.md, not
from what the hook happens to do.
"""

from __future__ import annotations

import json
import shutil

import pytest
from claude_code_langfuse import turns as h
from samples import SAMPLES  # noqa: E402
from transcript_factory import (
    HookRunner,
    Transcript,
    children,
    image,
    observations,
    root,
    session_end_event,
    stop_event,
    subagent_stop_event,
    text,
    thinking,
    tool_use,
)

needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"sample transcripts folder {SAMPLES} absent")

FE5E = "dkimuson-claude-code-viewer__fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"
C037 = "dkimuson-claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl"
A1AF = "dkimuson-claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl"
AGT_SESSION = "lanegrid-agtrace__claude_session.jsonl"
AGT_AGENT = "lanegrid-agtrace__claude_agent.jsonl"
STOP_ERR = "fdpearce-claude-code-sessions__hook-trace-stop-hook-error.jsonl"
LADDER = "fdpearce-claude-code-sessions__hook-trace-denial-and-stop-ladder.jsonl"


def raw_rows(path) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


def session_of(path) -> str:
    return next(r["sessionId"] for r in raw_rows(path) if r.get("sessionId"))


def sample_copy(tmp_path, name: str) -> str:
    """A sample under its session file name (the layout Claude Code uses), in a private folder."""
    src = SAMPLES / name
    dst_dir = tmp_path / "projects" / "-home-user-proj"
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / f"{session_of(src)}.jsonl"
    shutil.copyfile(src, dst)
    return str(dst)


def all_records(tmp_path, path: str, event_name: str = "SessionEnd") -> list[dict]:
    runner = HookRunner(str(tmp_path / "state"))
    runner.run({"session_id": session_of(path), "transcript_path": path, "cwd": "/home/user/proj", "hook_event_name": event_name})
    return list(runner.latest().values())


def turn_records(records) -> list[dict]:
    return sorted((r for r in records if r["kind"] == "turn"), key=lambda r: r["trace"]["metadata"]["turn_number"])


def every_observation(records) -> list[dict]:
    return [o for r in records for o in r["observations"]]


# ============================================================================ real transcripts


@needs_samples
@pytest.mark.parametrize(
    "name, expected",
    [
        # (kind, trace name prefix) per turn, from the samples README
        (A1AF, [("slash-command", "/init")]),
        (C037, [("slash-command", "/orchestrator")]),
        (FE5E, [("slash-command", "/orchestrator create TODO app by Next.js"), ("prompt", "Thanks! Please update CLAUDE.md")]),
        (AGT_SESSION, [("prompt", "add myapp directory"), ("prompt", "cd to myapp and run python hoge.py")]),
        (STOP_ERR, [("prompt", "Run the command: echo run three")]),
        (
            LADDER,
            [
                ("prompt", "Run the command: echo hook fixture run"),
                ("prompt", "Read the file .env"),
                ("prompt", "Use the Glob tool"),
                ("prompt", "Delete the file .stop-stage"),
            ],
        ),
        (AGT_AGENT, []),
    ],
)
def test_real_transcripts_give_one_trace_per_prompt(tmp_path, name, expected):
    path = sample_copy(tmp_path, name)
    turns = turn_records(all_records(tmp_path, path))
    got = [(t["trace"]["metadata"]["turn_kind"], t["trace"]["name"]) for t in turns]
    assert len(got) == len(expected), got
    for (kind, prefix), (got_kind, got_name) in zip(expected, got, strict=True):
        assert got_kind == kind and got_name.startswith(prefix), got
    # one trace per turn, each under its own id
    assert len({t["trace"]["id"] for t in turns}) == len(turns)


@needs_samples
def test_stop_ladder_is_four_prompts_and_the_feedback_stays_in_turn_four(tmp_path):
    path = sample_copy(tmp_path, LADDER)
    turns = turn_records(all_records(tmp_path, path))
    prompt_ids = [
        r["promptId"]
        for r in raw_rows(path)
        if r.get("type") == "user" and isinstance(r["message"]["content"], str) and not r.get("isMeta")
    ]
    assert len(prompt_ids) == 4 and len(set(prompt_ids)) == 4
    assert [t["trace"]["metadata"]["prompt_id"] for t in turns] == prompt_ids
    fourth = turns[3]
    assert len(observations(fourth, "generation")) == 5
    events = observations(fourth, "event")
    assert [e["name"] for e in events] == ["stop-hook-feedback"]
    assert "one-time block" in events[0]["input"]
    # the ladder's last answer is the turn's output, not the first one
    assert root(fourth)["output"] == "NOTED"


@needs_samples
def test_stop_ladder_three_stop_firings_upsert_one_trace(tmp_path):
    """Stop fires after READY, after CONTINUING and after NOTED: one trace id, completed in place."""
    src = SAMPLES / LADDER
    lines = src.read_bytes().splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    answers = {"READY", "CONTINUING", "NOTED"}
    cut_points = [
        i + 1
        for i, r in enumerate(rows)
        if r.get("type") == "assistant" and any(b.get("text") in answers for b in r["message"]["content"] if b.get("type") == "text")
    ]
    assert len(cut_points) == 3
    live = tmp_path / "projects" / "p" / f"{session_of(src)}.jsonl"
    live.parent.mkdir(parents=True)
    runner = HookRunner(str(tmp_path / "state"))
    written = 0
    fourth_prompt = next(
        r["promptId"] for r in rows if r.get("type") == "user" and str(r["message"]["content"]).startswith("Delete the file")
    )
    for n, (cut, answer) in enumerate(zip(cut_points, ["READY", "CONTINUING", "NOTED"], strict=True)):
        with open(live, "ab") as f:
            f.write(b"".join(lines[written:cut]))
        written = cut
        runner.run(
            {
                "session_id": session_of(src),
                "transcript_path": str(live),
                "cwd": "/home/user/p",
                "hook_event_name": "Stop",
                "prompt_id": fourth_prompt,
                "stop_hook_active": n > 0,
                "last_assistant_message": answer,
            }
        )
    with open(live, "ab") as f:
        f.write(b"".join(lines[written:]))
    runner.run({"session_id": session_of(src), "transcript_path": str(live), "hook_event_name": "SessionEnd"})
    fourth = [r for r in runner.queue() if r["trace"]["metadata"].get("prompt_id") == fourth_prompt]
    assert fourth, "turn 4 never queued"
    assert len({r["trace"]["id"] for r in fourth}) == 1
    assert len({r["key"] for r in fourth}) == 1
    final = runner.latest()[fourth[0]["key"]]
    assert len(observations(final, "generation")) == 5
    assert root(final)["output"] == "NOTED"
    assert len(turn_records(runner.latest().values())) == 4


@needs_samples
def test_exit_local_command_is_not_a_turn(tmp_path):
    path = sample_copy(tmp_path, AGT_SESSION)
    turns = turn_records(all_records(tmp_path, path))
    assert len(turns) == 2
    assert all("/exit" not in t["trace"]["name"] and "Caveat" not in t["trace"]["name"] for t in turns)
    assert all(o.get("type") != "generation" or o["model"] != "<synthetic>" for o in every_observation(turns))


@needs_samples
@pytest.mark.parametrize(
    "name, command, expansion_snippet",
    [
        (A1AF, "/init", None),
        (FE5E, "/orchestrator", None),
        (C037, "/orchestrator", None),
    ],
)
def test_slash_command_turn_folds_in_its_expansion(tmp_path, name, command, expansion_snippet):
    path = sample_copy(tmp_path, name)
    rows = raw_rows(path)
    cmd_idx = next(
        i
        for i, r in enumerate(rows)
        if r.get("type") == "user" and isinstance(r["message"]["content"], str) and "<command-name>" in r["message"]["content"]
    )
    expansion = rows[cmd_idx + 1]
    assert expansion.get("isMeta")
    expansion_text = h.content_text(expansion["message"]["content"])
    first = turn_records(all_records(tmp_path, path))[0]
    assert first["trace"]["name"].startswith(command)
    # what Claude was actually asked is in the trace input, not a separate trace
    assert expansion_text.strip()[:200] in root(first)["input"]


@needs_samples
def test_usage_is_deduplicated_per_message_over_main_and_sidechains(tmp_path):
    path = sample_copy(tmp_path, FE5E)
    rows = raw_rows(path)
    per_line = sum(r["message"]["usage"]["output_tokens"] for r in rows if r.get("type") == "assistant")
    best: dict[str, dict] = {}
    for r in rows:
        if r.get("type") == "assistant":
            u, mid = r["message"]["usage"], r["message"]["id"]
            if mid not in best or u["output_tokens"] > best[mid]["output_tokens"]:
                best[mid] = u
    deduped = {
        k: sum(u.get(src, 0) for u in best.values())
        for k, src in (("output", "output_tokens"), ("input", "input_tokens"), ("cache_read_input_tokens", "cache_read_input_tokens"))
    }
    assert (per_line, deduped["output"], len(best)) == (77_612, 51_933, 170)  # the README's numbers, recomputed above

    gens = [o for o in every_observation(all_records(tmp_path, path)) if o["type"] == "generation"]
    assert len(gens) == 170 and len({o["id"] for o in gens}) == 170
    for key, want in deduped.items():
        assert sum((o["usage_details"] or {}).get(key, 0) for o in gens) == want, key


@needs_samples
@pytest.mark.parametrize("name", [FE5E, C037, A1AF, AGT_SESSION, STOP_ERR, LADDER])
def test_every_tool_call_is_paired_with_its_result_by_id(tmp_path, name):
    path = sample_copy(tmp_path, name)
    rows = raw_rows(path)
    calls, results = {}, {}
    for r in rows:
        content = (r.get("message") or {}).get("content")
        if not isinstance(content, list):
            continue
        for b in content:
            if b.get("type") == "tool_use":
                calls[b["id"]] = b
            elif b.get("type") == "tool_result":
                results[b["tool_use_id"]] = b
    records = all_records(tmp_path, path)
    tools = [o for o in every_observation(records) if o["type"] == "tool"]
    by_use_id = {o["metadata"]["tool_use_id"]: o for o in tools}
    assert set(by_use_id) == set(calls)
    assert len(tools) == len(calls)
    for tid, call in calls.items():
        obs = by_use_id[tid]
        assert obs["name"] == call["name"] and obs["input"] == call["input"]
        res = results.get(tid)
        assert res is not None, f"sample has no result for {tid}"
        want = res["content"] if isinstance(res["content"], str) else h.tool_result_output(res["content"])
        assert obs["output"] == want
        assert (obs["level"] == "ERROR") == bool(res.get("is_error"))


@needs_samples
def test_inline_sidechains_nest_under_their_task_calls(tmp_path):
    path = sample_copy(tmp_path, FE5E)
    records = all_records(tmp_path, path)
    obs = {o["id"]: o for o in every_observation(records)}
    tasks = [o for o in obs.values() if o["type"] == "tool" and o["name"] == "Task"]
    agents = [o for o in obs.values() if o["type"] == "agent"]
    assert len(tasks) == 5 and len(agents) == 5
    for agent in agents:
        parent = obs[agent["parent_id"]]
        assert parent["type"] == "tool" and parent["name"] == "Task"
        # the right run under the right call: the sidechain's first prompt is the Task prompt
        assert agent["input"].strip() == parent["input"]["prompt"].strip()
        assert [o for o in obs.values() if o["parent_id"] == agent["id"] and o["type"] == "generation"]
    assert len({o["parent_id"] for o in agents}) == 5
    # every sidechain generation hangs below an agent, none directly under a turn root
    roots = {r["observations"][0]["id"] for r in records}
    sidechain_ids = {r["message"]["id"] for r in raw_rows(path) if r.get("type") == "assistant" and r.get("isSidechain")}
    for o in obs.values():
        if o["type"] == "generation" and o["metadata"]["message_id"] in sidechain_ids:
            assert o["parent_id"] not in roots


@needs_samples
def test_parallel_task_calls_and_a_failed_task(tmp_path):
    path = sample_copy(tmp_path, C037)
    records = all_records(tmp_path, path)
    obs = {o["id"]: o for o in every_observation(records)}
    tasks = [o for o in obs.values() if o["type"] == "tool" and o["name"] == "Task"]
    failed = [t for t in tasks if t["level"] == "ERROR"]
    assert len(failed) == 1 and "InputValidationError" in failed[0]["status_message"]
    assert not [o for o in obs.values() if o["parent_id"] == failed[0]["id"]]
    agents = [o for o in obs.values() if o["type"] == "agent"]
    assert len(agents) == len(tasks) - 1 == 2
    for a in agents:
        assert a["input"].strip() == obs[a["parent_id"]]["input"]["prompt"].strip()


@needs_samples
def test_warmup_agent_file_alone_is_not_traced(tmp_path):
    src_session, src_agent = SAMPLES / AGT_SESSION, SAMPLES / AGT_AGENT
    folder = tmp_path / "projects" / "-Users-test-user-agent-sample"
    folder.mkdir(parents=True)
    session = folder / f"{session_of(src_session)}.jsonl"
    agent_id = raw_rows(src_agent)[0]["agentId"]
    agent = folder / f"agent-{agent_id}.jsonl"
    shutil.copyfile(src_session, session)
    shutil.copyfile(src_agent, agent)
    runner = HookRunner(str(tmp_path / "state"))
    base = {"session_id": session_of(src_session), "transcript_path": str(session), "cwd": "/Users/test_user/agent-sample"}
    runner.run({**base, "hook_event_name": "SubagentStop", "agent_id": agent_id, "agent_transcript_path": str(agent)})
    runner.run({**base, "hook_event_name": "Stop"})
    runner.run({**base, "hook_event_name": "SessionEnd"})
    runner.run({**base, "transcript_path": str(agent), "hook_event_name": "SessionEnd"})
    records = runner.queue()
    assert all(r["kind"] == "turn" for r in records)
    assert not [o for o in every_observation(records) if o["type"] == "agent"]
    assert all("Warmup" not in r["trace"]["name"] for r in records)
    assert len(turn_records(runner.latest().values())) == 2


@needs_samples
def test_denied_tool_is_an_error(tmp_path):
    path = sample_copy(tmp_path, LADDER)
    second = turn_records(all_records(tmp_path, path))[1]
    (read,) = [o for o in observations(second, "tool") if o["name"] == "Read"]
    assert read["level"] == "ERROR"
    assert read["status_message"].startswith("PreToolUse:Read hook error")


@needs_samples
def test_thinking_blocks_are_in_generation_output(tmp_path):
    path = sample_copy(tmp_path, AGT_SESSION)
    first = turn_records(all_records(tmp_path, path))[0]
    gen = observations(first, "generation")[0]
    blocks = gen["output"]["content"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use"]
    assert blocks[0]["thinking"].startswith("The user wants me to")
    assert "signature" not in json.dumps(blocks)
    # 2.1.280 redacts thinking text to "": the block is still shown
    ladder_first = turn_records(all_records(tmp_path / "l", sample_copy(tmp_path / "l", LADDER)))[0]
    assert observations(ladder_first, "generation")[0]["output"]["content"][0]["type"] == "thinking"


@needs_samples
def test_real_turn_times_lie_within_the_turn(tmp_path):
    for name in (LADDER, AGT_SESSION, FE5E):
        path = sample_copy(tmp_path / name[:8], name)
        for rec in all_records(tmp_path / name[:8], path):
            r = root(rec)
            for o in rec["observations"]:
                assert o["start"] <= o["end"], o
                assert r["start"] <= o["start"] and o["end"] <= r["end"], (name, o["name"])


# ============================================================================ fixtures (2.1.328 and older shapes)


def final_turns(runner) -> list[dict]:
    return turn_records(runner.latest().values())


def test_328_bookkeeping_lines_do_not_make_turns(session, runner):
    session.simple_turn("say hello", "Hello!")
    session.simple_turn("say bye", "Bye!", tool=("Bash", {"command": "echo bye"}, "bye"))
    runner.run(session_end_event(session))
    turns = final_turns(runner)
    assert [t["trace"]["name"] for t in turns] == ["say hello", "say bye"]
    assert [root(t)["output"] for t in turns] == ["Hello!", "Bye!"]
    assert [len(observations(t, "generation")) for t in turns] == [1, 2]


def test_compaction_is_an_event_not_a_prompt(session, runner):
    session.simple_turn("build the page", "Done.")
    session.prompt("now add a footer")
    call = tool_use("Read", {"file_path": "/home/dev/proj/index.html"})
    session.respond(text("Reading."), call)
    session.tool_results((call["id"], "<html>…</html>"))
    session.compact("The user asked for a web page; now a footer.")
    session.respond(text("Footer added."))
    session.turn_duration()
    runner.run(session_end_event(session))
    turns = final_turns(runner)
    assert [t["trace"]["name"] for t in turns] == ["build the page", "now add a footer"]
    second = turns[1]
    names = [e["name"] for e in observations(second, "event")]
    assert "compaction" in names
    assert not any("being continued" in t["trace"]["name"] for t in turns)
    assert root(second)["output"] == "Footer added."
    assert len(observations(second, "generation")) == 2


def test_manual_compaction_between_turns_does_not_open_a_turn(session, runner):
    session.simple_turn("first question", "first answer")
    session.compact("Summary of the first question.", trigger="manual")
    session.simple_turn("second question", "second answer")
    runner.run(session_end_event(session))
    turns = final_turns(runner)
    assert [t["trace"]["name"] for t in turns] == ["first question", "second question"]
    assert [root(t)["output"] for t in turns] == ["first answer", "second answer"]


@pytest.mark.parametrize("for_tool_use", [False, True])
def test_interrupt_marks_the_turn_and_adds_none(session, runner, for_tool_use):
    session.prompt("refactor everything")
    call = tool_use("Bash", {"command": "rm -rf build"})
    session.respond(text("Cleaning first."), call)
    if for_tool_use:
        session.tool_results(
            (
                call["id"],
                "The user doesn't want to proceed with this tool use. The tool use was rejected "
                "(eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing "
                "and wait for the user to tell you how to proceed.",
                True,
            )
        )
    session.interrupt(for_tool_use=for_tool_use)
    # no Stop fires after an interrupt; the next prompt's Stop closes it
    session.simple_turn("just fix the typo", "Fixed.")
    runner.run(stop_event(session, "Fixed."))
    turns = final_turns(runner)
    assert [t["trace"]["name"] for t in turns] == ["refactor everything", "just fix the typo"]
    first, second = turns
    assert root(first)["metadata"]["interrupted"] is True
    assert root(first)["level"] in ("WARNING", "ERROR")
    assert root(second)["metadata"]["interrupted"] is False
    if for_tool_use:
        (bash,) = observations(first, "tool")
        assert bash["level"] == "ERROR"


@pytest.mark.parametrize("own_prompt_id", [True, False])
def test_task_notification_is_its_own_turn(session, runner, own_prompt_id):
    session.simple_turn("run the tests in the background", "Started.")
    session.task_notification("b7x2k", 'Background command "npm test" completed (exit code 0)', no_prompt_id=not own_prompt_id)
    session.respond(text("The tests passed."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "The tests passed."))
    turns = final_turns(runner)
    assert len(turns) == 2
    note = turns[1]
    assert note["trace"]["metadata"]["turn_kind"] == "task-notification"
    assert note["trace"]["name"].startswith("Task notification")
    assert root(note)["output"] == "The tests passed."
    assert root(turns[0])["output"] == "Started."


def test_stop_hook_feedback_with_same_prompt_id_stays_in_the_turn(session, runner):
    session.prompt("write the report")
    session.respond(text("Report written."))
    session.stop_feedback("Please also add a summary line.")
    session.stop_hook_summary()
    session.respond(text("Summary: all good."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "Summary: all good.", stop_hook_active=True))
    (turn,) = final_turns(runner)
    assert len(observations(turn, "generation")) == 2
    assert [e["name"] for e in observations(turn, "event")] == ["stop-hook-feedback"]
    assert root(turn)["output"] == "Summary: all good."


def test_parallel_tool_results_out_of_order_pair_by_id(session, runner):
    session.prompt("check three files")
    a = tool_use("Read", {"file_path": "/a"})
    b = tool_use("Read", {"file_path": "/b"})
    c = tool_use("Read", {"file_path": "/c"})
    session.respond(text("Reading all three."), a, b, c)
    session.tool_results((c["id"], "content of c"))
    session.tool_results((a["id"], "content of a"), (b["id"], "content of b"))
    session.respond(text("All read."))
    session.turn_duration()
    runner.run(stop_event(session, "All read."))
    (turn,) = final_turns(runner)
    tools = {o["input"]["file_path"]: o for o in observations(turn, "tool")}
    assert {k: v["output"] for k, v in tools.items()} == {"/a": "content of a", "/b": "content of b", "/c": "content of c"}
    assert len(observations(turn, "generation")) == 2
    # one generation merged from 4 block lines, with the usage counted once
    gen = observations(turn, "generation")[0]
    assert [x["type"] for x in gen["output"]["content"]] == ["text", "tool_use", "tool_use", "tool_use"]
    assert gen["usage_details"]["output"] == 50


def test_old_style_placeholder_usage_takes_the_largest_line(tmp_path, runner):
    t = Transcript(str(tmp_path / "p" / "0ld5e551-0000-4000-8000-000000000000.jsonl"), version="2.0.28")
    t.prompt("hello")
    t.respond(thinking("Greeting."), text("Hi there."), out_tokens=321)
    runner.run(session_end_event(t))
    (turn,) = final_turns(runner)
    (gen,) = observations(turn, "generation")
    assert gen["usage_details"]["output"] == 321
    assert root(turn)["output"] == "Hi there."
    assert turn["trace"]["metadata"]["turn_kind"] == "prompt"


def test_api_error_rows_are_events_without_usage(session, runner):
    session.prompt("summarise the log")
    session.api_error_retry(1)
    session.api_error_retry(2)
    session.api_error_message("API Error: 529 Overloaded. Please try again later.")
    runner.run(session_end_event(session))
    (turn,) = final_turns(runner)
    assert not observations(turn, "generation")
    events = observations(turn, "event")
    assert any("API Error: 529" in json.dumps(e["output"]) or "API Error: 529" in json.dumps(e["input"]) for e in events)
    assert all(e["usage_details"] is None and e["model"] is None for e in events)
    assert root(turn)["output"] in ("", None) or "API Error" in root(turn)["output"]


def test_api_error_then_success_counts_only_the_real_response(session, runner):
    session.prompt("summarise the log")
    session.api_error_retry(1)
    session.respond(text("Summary."), out_tokens=77)
    session.turn_duration()
    runner.run(session_end_event(session))
    (turn,) = final_turns(runner)
    gens = observations(turn, "generation")
    assert len(gens) == 1 and gens[0]["usage_details"]["output"] == 77
    assert gens[0]["model"] != "<synthetic>"
    assert root(turn)["output"] == "Summary."


def test_images_become_placeholders(session, runner):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    session.prompt([text("what is in this screenshot?"), image(png, "image/png")])
    call = tool_use("Read", {"file_path": "/home/dev/proj/shot.jpg"})
    session.respond(text("Let me look at the other one."), call)
    jpg = b"\xff\xd8\xff\xe0" + b"j" * 3000
    session.tool_results(
        (call["id"], [image(jpg, "image/jpeg")]),
        tool_use_result={"type": "image", "file": {"base64": image(jpg)["source"]["data"], "type": "image/jpeg", "originalSize": len(jpg)}},
    )
    session.respond(text("Both are cats."))
    session.turn_duration()
    runner.run(session_end_event(session))
    (turn,) = final_turns(runner)
    dumped = json.dumps(turn)
    assert image(png)["source"]["data"][:40] not in dumped
    assert image(jpg)["source"]["data"][:40] not in dumped
    assert "image/png" in root(turn)["input"] and str(len(png)) in root(turn)["input"]
    (read,) = observations(turn, "tool")
    assert "image/jpeg" in read["output"] and str(len(jpg)) in read["output"]


def background_agent_session(session: Transcript):
    """2.1.x background Agent: launch stub result, subagent file + meta, later a task notification."""
    session.prompt("research the API in the background")
    call = tool_use(
        "Agent", {"description": "Research API", "prompt": "Find the rate limits of the API.", "subagent_type": "general-purpose"}
    )
    session.respond(text("Starting a researcher."), call)
    agent_id = "a3f9c2d1e4b5a6978"
    agent = session.subagent(agent_id, call["id"], description="Research API")
    session.tool_results(
        (call["id"], [text(f"Async agent launched successfully.\nagentId: {agent_id} (internal ID)")]),
        tool_use_result={
            "status": "async_launched",
            "agentId": agent_id,
            "description": "Research API",
            "prompt": "Find the rate limits of the API.",
            "outputFile": "/tmp/x.output",
            "resolvedModel": "claude-opus-5-5",
        },
    )
    agent.agent_prompt("Find the rate limits of the API.")
    search = tool_use("WebFetch", {"url": "https://example.com/limits"})
    agent.respond(text("Fetching docs."), search, out_tokens=40)
    session.respond(text("The researcher is running; I'll report back."))
    session.stop_hook_summary()
    session.turn_duration()
    return call, agent, search


def test_background_agent_nests_under_its_agent_call(session, runner):
    call, agent, search = background_agent_session(session)
    runner.run(stop_event(session, "The researcher is running; I'll report back."))
    (turn,) = final_turns(runner)
    (agent_tool,) = [o for o in observations(turn, "tool") if o["name"] == "Agent"]
    (agent_obs,) = observations(turn, "agent")
    assert agent_obs["parent_id"] == agent_tool["id"]
    assert "Research API" in agent_obs["name"]
    assert agent_obs["input"] == "Find the rate limits of the API."
    sub_gens = children(turn, agent_obs["id"], "generation")
    assert len(sub_gens) == 1
    # the main turn's own generations are not mixed with the agent's
    assert len(children(turn, root(turn)["id"], "generation")) == 2


def test_subagent_stop_reemits_the_launching_turn_with_the_whole_run(session, runner):
    call, agent, search = background_agent_session(session)
    runner.run(stop_event(session, "The researcher is running; I'll report back."))
    (first,) = final_turns(runner)
    # the agent finishes later; the user has moved on to another prompt meanwhile
    session.simple_turn("unrelated question", "unrelated answer")
    runner.run(stop_event(session, "unrelated answer"))
    agent.tool_results((search["id"], "100 requests per minute"))
    agent.respond(text("The limit is 100 requests per minute."), out_tokens=30)
    runner.run(subagent_stop_event(session, agent, last_assistant_message="The limit is 100 requests per minute."))
    again = runner.latest()[first["key"]]
    assert again["trace"]["id"] == first["trace"]["id"]
    (agent_obs,) = observations(again, "agent")
    assert agent_obs["id"] == observations(first, "agent")[0]["id"]
    assert agent_obs["output"] == "The limit is 100 requests per minute."
    assert len(children(again, agent_obs["id"], "generation")) == 2
    (fetch,) = children(again, agent_obs["id"], "tool")
    assert fetch["output"] == "100 requests per minute"
    old_ids = {o["id"] for o in first["observations"]}
    assert old_ids <= {o["id"] for o in again["observations"]}
    # then the notification turn of the finished agent arrives as its own trace
    session.task_notification(agent.agent_id, 'Agent "Research API" completed')
    session.respond(text("The researcher found: 100 requests per minute."))
    session.turn_duration()
    runner.run(stop_event(session, "The researcher found: 100 requests per minute."))
    turns = final_turns(runner)
    assert [t["trace"]["metadata"]["turn_kind"] for t in turns] == ["prompt", "prompt", "task-notification"]


def test_subagent_stop_while_launching_turn_is_still_last(session, runner):
    call, agent, search = background_agent_session(session)
    runner.run(stop_event(session, "The researcher is running; I'll report back."))
    agent.tool_results((search["id"], "100 requests per minute"))
    agent.respond(text("The limit is 100 requests per minute."), out_tokens=30)
    runner.run(subagent_stop_event(session, agent, last_assistant_message="The limit is 100 requests per minute."))
    (turn,) = final_turns(runner)
    (agent_obs,) = observations(turn, "agent")
    assert agent_obs["output"] == "The limit is 100 requests per minute."
    assert len(children(turn, agent_obs["id"], "generation")) == 2


def test_flat_agent_file_of_2_0_is_linked_by_agent_id(tmp_path, runner):
    t = Transcript(str(tmp_path / "projects" / "-p" / "7f2abd2d-7cfc-4447-9ddd-3ca8d14e02e9.jsonl"), version="2.0.64")
    t.prompt("explore the repo")
    call = tool_use("Task", {"description": "Explore repo", "prompt": "List the modules.", "subagent_type": "Explore"})
    t.respond(text("Delegating."), call)
    agent = t.flat_agent("9e1f0c2a")
    agent.agent_prompt("List the modules.")
    agent.respond(text("Modules: a, b."), out_tokens=12)
    t.tool_results(
        (call["id"], [text("Modules: a, b.\n\nagentId: 9e1f0c2a (for resuming to continue this agent's work if needed)")]),
        tool_use_result={
            "status": "completed",
            "agentId": "9e1f0c2a",
            "content": [text("Modules: a, b.")],
            "totalDurationMs": 2000,
            "totalTokens": 500,
            "totalToolUseCount": 0,
        },
    )
    t.respond(text("The repo has modules a and b."))
    # a Warmup agent file from session start sits next to it and must not be picked up
    warm = t.flat_agent("0c4c3cf8")
    warm.agent_prompt("Warmup")
    warm.respond(text("Hello! Ready."))
    runner.run(session_end_event(t))
    (turn,) = final_turns(runner)
    (agent_obs,) = observations(turn, "agent")
    (task,) = observations(turn, "tool")
    assert agent_obs["parent_id"] == task["id"]
    assert agent_obs["output"] == "Modules: a, b."
    assert len(children(turn, agent_obs["id"], "generation")) == 1
    assert "Warmup" not in json.dumps(turn)


def test_foreground_agent_linked_by_meta_json_while_it_runs(session, runner):
    """2.1.x: before the Agent call has a result, only <id>.meta.json's toolUseId links the run."""
    session.prompt("review the diff")
    call = tool_use("Agent", {"description": "Review diff", "prompt": "Review the staged diff.", "subagent_type": "code-reviewer"})
    session.respond(text("Asking a reviewer."), call)
    agent = session.subagent("b81c7d2e9f0a1b2c3", call["id"], agent_type="code-reviewer", description="Review diff")
    agent.agent_prompt("Review the staged diff.")
    agent.respond(text("Looks fine."), out_tokens=20)
    # SubagentStop fires while the parent turn is still waiting on the Agent call
    runner.run(subagent_stop_event(session, agent, agent_type="code-reviewer", last_assistant_message="Looks fine."))
    runner.run(session_end_event(session))  # e.g. the user quits before the parent answers
    (turn,) = final_turns(runner)
    (agent_tool,) = observations(turn, "tool")
    (agent_obs,) = observations(turn, "agent")
    assert agent_obs["parent_id"] == agent_tool["id"]
    assert agent_obs["output"] == "Looks fine."
    assert agent_obs["metadata"].get("agentType") == "code-reviewer" or "code-reviewer" in json.dumps(agent_obs["metadata"])
    # the parent then gets the result and answers: same trace, same agent observation
    session.tool_results(
        (call["id"], [text("Looks fine.")]),
        tool_use_result={
            "status": "completed",
            "agentId": agent.agent_id,
            "content": [text("Looks fine.")],
            "totalDurationMs": 1500,
            "totalTokens": 900,
            "totalToolUseCount": 0,
        },
    )
    session.respond(text("The reviewer approved the diff."))
    session.turn_duration()
    runner.run(stop_event(session, "The reviewer approved the diff."))
    (final,) = final_turns(runner)
    assert final["trace"]["id"] == turn["trace"]["id"]
    assert [o["id"] for o in observations(final, "agent")] == [agent_obs["id"]]
    assert root(final)["output"] == "The reviewer approved the diff."
    assert len(children(final, agent_obs["id"], "generation")) == 1


def test_1_0_inline_sidechains_match_their_task_by_prompt(tmp_path, runner):
    t = Transcript(str(tmp_path / "p" / "1d0c0de0-0000-4000-8000-000000000001.jsonl"), version="1.0.98")
    t.prompt("set up the project")
    first = tool_use("Task", {"description": "Create models", "prompt": "Create the data models.", "subagent_type": "general-purpose"})
    second = tool_use("Task", {"description": "Write tests", "prompt": "Write the unit tests.", "subagent_type": "general-purpose"})
    t.respond(text("Two helpers."), first, second)
    # the second call's sidechain is written first
    for prompt, answer in (("Write the unit tests.", "Tests written."), ("Create the data models.", "Models created.")):
        side = t.inline_sidechain()
        side.agent_prompt(prompt)
        side.respond(text(answer), out_tokens=11)
    t.tool_results((second["id"], [text("Tests written.")]), tool_use_result={"content": [text("Tests written.")], "totalTokens": 11})
    t.tool_results((first["id"], [text("Models created.")]), tool_use_result={"content": [text("Models created.")], "totalTokens": 11})
    t.respond(text("Project ready."))
    runner.run(session_end_event(t))
    (turn,) = final_turns(runner)
    tasks = {o["input"]["prompt"]: o for o in observations(turn, "tool")}
    agents = {o["parent_id"]: o for o in observations(turn, "agent")}
    assert agents[tasks["Create the data models."]["id"]]["output"] == "Models created."
    assert agents[tasks["Write the unit tests."]["id"]]["output"] == "Tests written."
    assert len(children(turn, root(turn)["id"], "generation")) == 2
    assert root(turn)["output"] == "Project ready."
