"""The circuit breaker: notices when the model server, not the images, is the problem.

A dead server, a wrong API key or a model that is not served fails every image the same way, after
the backend's own retries. Without a breaker a run would turn the rest of the dataset into failed
records (all downloads and reads wasted, and a million-line journal of one error). So the runner
feeds every result to a ``Breaker``; when ``threshold`` images in a row fail with the same
server-side kind (``BackendError.kind``: unreachable, auth, not found), ``observe`` returns why,
and the runner acts on it (``scalecap.outage.ServerRun``):

- ``backend_unreachable`` (an outage, which may end by itself): the run pauses, probes the server
  and resumes when it answers, re-running the images the outage failed; it stops only when the
  pause runs out (``OutagePolicy.wait``) or when it cannot probe;
- ``backend_auth`` and ``backend_not_found`` (waiting does not fix a wrong key or model name):
  the run stops at once.

A stop is clean: finished records are kept, the images in flight get no record (the next run does
them), and the failed ones are retried by the next run. Only an ``ok`` result resets the count: a
bad image fails before any model call and says nothing about the server. The breaker only counts;
pausing and stopping are the runner's.
"""

from __future__ import annotations

from .records import CaptionResult

#: Failure kinds that are the server's, not the image's.
SERVER_KINDS = frozenset({"backend_unreachable", "backend_auth", "backend_not_found"})
#: The server kinds that may end by themselves (a pause can wait them out).
TRANSIENT_KINDS = frozenset({"backend_unreachable"})
DEFAULT_THRESHOLD = 20


class Breaker:
    def __init__(self, threshold: int | None = DEFAULT_THRESHOLD) -> None:
        if threshold is not None and threshold < 0:
            raise ValueError("the breaker threshold must be >= 0 (0: never stop)")
        self.threshold = threshold or 0
        self.kind: str | None = None
        self.streak = 0
        self.last_error: str | None = None

    @property
    def transient(self) -> bool:
        """The current streak's kind is one a pause can wait out."""
        return self.kind in TRANSIENT_KINDS

    def reset(self) -> None:
        """Forget the streak (the server answered a probe)."""
        self.kind, self.streak = None, 0

    def observe(self, result: CaptionResult) -> str | None:
        """Count one result; the reason to stop when the breaker trips, else None."""
        if not self.threshold:
            return None
        if result.status in ("ok", "rejected"):  # a rejected caption was written: the models work
            self.reset()
            return None
        kind = result.error_kind if result.status == "failed" else None
        if kind not in SERVER_KINDS:
            return None
        self.streak = self.streak + 1 if kind == self.kind else 1
        self.kind, self.last_error = kind, result.error
        if self.streak < self.threshold:
            return None
        return (f"stopped after {self.streak} images in a row failed with {kind} (last: {self.last_error}); "
                "finished records are kept: fix the server, then run the same command again "
                "(the failed images are retried)")
