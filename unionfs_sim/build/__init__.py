"""Build images from Dockerfiles with Docker's cache rules (classic and BuildKit), explaining every miss."""

from .builder import RULES, Builder, BuildError, BuildResult, Step
from .context import Context, ContextError
from .parser import Dockerfile, DockerfileError, Instruction, parse
from .shell import UnsupportedCommand

__all__ = ["RULES", "BuildError", "BuildResult", "Builder", "Context", "ContextError", "Dockerfile",
           "DockerfileError", "Instruction", "Step", "UnsupportedCommand", "parse"]
