"""logger: appends every packet it receives to log.txt (seed 001, plugins/logger.py).

The file is ``DATA_DIR/log.txt`` unless the app's settings name another ``path``. Each
entry is the packet's first line and headers as on the wire, then its body (decoded as
UTF-8 with replacement, cut at 4 KiB), then a blank line.
"""

from __future__ import annotations

import time
from pathlib import Path

from smartget.mesh.apps import App, AppContext

__all__ = ["APP", "LoggerApp"]

MAX_LOGGED_BODY = 4096


class LoggerApp(App):
    name = "logger"
    verify_origin = True

    async def run(self, ctx: AppContext) -> None:
        path = Path(ctx.settings.get("path") or ctx.node_dir / "log.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Small appends to a local file: cheaper inline than a thread per packet.
        with open(path, "a", encoding="utf-8") as log_file:  # noqa: ASYNC230
            while True:
                dp = await ctx.receive()
                lines = [f"# {time.strftime('%Y-%m-%d %H:%M:%S')} origin={dp.origin or '-'}"]
                lines.append(f"{dp.method} {dp.app} {dp.version}")
                lines += [f"{k}: {v}" for k, v in dp.head.items() if k not in ("sig", "cert")]
                if dp.method == "file":
                    lines.append(f"(file stored at {dp.file})")
                else:
                    body = dp.body[:MAX_LOGGED_BODY].decode("utf-8", "replace")
                    lines.append("")
                    lines.append(body + ("..." if len(dp.body) > MAX_LOGGED_BODY else ""))
                log_file.write("\n".join(lines) + "\n\n")
                log_file.flush()


APP = LoggerApp
