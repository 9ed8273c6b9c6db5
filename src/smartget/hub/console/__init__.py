"""The hub's console: a live page operators keep open (issue 16).

Sign-in with the hub's token at ``/login`` (a session cookie), then ``/`` shows the
fleet, the push jobs, charts of the last hour, the swarms and the hubs, live over
Server-Sent Events; operators drain nodes, bring them back, remove zombies, and start
and cancel push jobs (hub/jobs/) from it. Plain ES modules and CSS in ``static/``, no
build step.

Sans-IO cores: :mod:`.session` (cookies, CSRF, throttle), :mod:`.history` (the charts'
ring buffer), :mod:`.drain` (drained nodes held at status 0), :mod:`.views` (the
snapshot, jobs included). :mod:`.service` runs them; :mod:`.web` is the HTTP face.
Jobs started from the page go to the hub's JobRunner like ``POST /api/jobs``'s.
"""

from smartget.hub.console.drain import DrainingCommands, DrainList
from smartget.hub.console.service import Console
from smartget.hub.console.web import ConsoleHost, add_console

__all__ = ["Console", "ConsoleHost", "DrainList", "DrainingCommands", "add_console"]
