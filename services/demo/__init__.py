"""The demo behind ``make run`` (``apihub demo``): ``calls`` (round trips through the hub), then ``repair``
(the workers' whole repair loop, counted by ``tally``)."""

from services.demo.calls import run_demo

__all__ = ["run_demo"]
