"""The mesh: MSW's overlay messaging (seed 001), with every peer authenticated.

README.md beside this file has the wire format, the security model and how to write an
app.

Modules:

=================  ====================================================================
``datapack``       the Datapack codec (sans-IO)
``router``         where each packet goes: apps, links, proxies, retry queue (sans-IO)
``ca``             private CA, node certificates, TLS contexts, signatures, release keys
``link``           one mutual-TLS link: the asyncio driver of the codec
``_rxfile``        a file arriving on a link, written and hashed in a worker thread
``node``           the node: listener, dialer, router driver, apps, authorization
``apps``           the app interface and the built-ins logger, console, shell, update
``client``         one-shot sender for scripts (``smartget mesh send``)
``supervisor``     restart on exit 0, as MSW's main.py
``cli``            ``smartget mesh``
=================  ====================================================================
"""

from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Datapack, DatapackDecoder, encode
from smartget.mesh.node import MeshSettings, Node, running

__all__ = [
    "App",
    "AppContext",
    "Datapack",
    "DatapackDecoder",
    "MeshSettings",
    "Node",
    "encode",
    "running",
]
