"""The root of every error the pipeline reports to a user (as one clear line, never a traceback)."""


class PipelineError(Exception):
    """Bad input or a missing prerequisite; the message names the file or setting and the cause."""
