"""claude-code-langfuse: every Claude Code turn as a back-dated Langfuse trace.

Modules in the order data flows (docs/design.md draws the map):
  hook side (Claude Code waits for these; standard library only, constant work):
    config -> event -> files -> inbox -> runtime -> hook
  worker side (a detached process):
    transcript -> turns -> forks -> subagents -> records -> redaction -> store -> collect
    -> delivery -> sender (the only module that imports the langfuse SDK) ; worker drives them
  commands: commands (status, drain), backfill, doctor, insights, cli
"""
