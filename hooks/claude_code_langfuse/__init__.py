"""claude-code-langfuse."""
