"""The mesh: MSW's overlay messaging (seed 001), with every peer authenticated.

README.md beside this file has the wire format, the security model, how to write an
app, and how the parts below depend on each other.

Modules (sans-IO cores marked *):

=================  ====================================================================
``datapack`` *     the Datapack codec; immutable packets; ``Received`` (local-only data)
``router`` *       where each packet goes: apps, links, proxies, retry queue
``policy`` *       who may send to which app; which packets to sign; confined paths
``session`` *      one link's protocol state: framing, "up", file ordering, outbox
``registry`` *     the link in use per peer (duplicate tie-break), dial bookkeeping
``replay`` *       signed packets delivered within their validity window (replays)
``replaylog``      the replay cache in DATA_DIR/replay.log
``ca``             private CA, node certificates, TLS contexts, signatures, release keys
``link``           one mutual-TLS link: the asyncio driver of a session
``_rxfile``        a file arriving on a link, written and hashed in a worker thread
``files``          received files on disk: tmp (relayed, refcounted) and recv
``settings``       ``MeshSettings`` and the address.txt reader
``service``        the composition root: ``Node`` builds and wires the parts; ``running``
``apps``           the app interface (``App``, ``AppContext``) and the built-ins
``loader``         where apps come from: built-ins, entry points, --apps-dir
``msw``            original MSW plugins, unchanged, in their threads
``client``         one-shot sender for scripts (``smartget mesh send``)
``supervisor``     restart on exit 0, as MSW's main.py
``cli``            ``smartget mesh``
=================  ====================================================================
"""

from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Datapack, DatapackDecoder, Received, encode
from smartget.mesh.service import Node, running
from smartget.mesh.settings import MeshSettings

__all__ = [
    "App",
    "AppContext",
    "Datapack",
    "DatapackDecoder",
    "MeshSettings",
    "Node",
    "Received",
    "encode",
    "running",
]
