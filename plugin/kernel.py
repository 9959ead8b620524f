"""The host's kernel as the driver sees it: netlink links, the bridge forwarding rule, sandbox namespaces."""

import os

from freeflow.plugin import firewall, netlink
from freeflow.router.netns import host_root, in_root


class HostKernel:
    """The real `Kernel` of driver.py; unit tests substitute a fake with the same methods.

    `root` is FREEFLOW_HOST_ROOT: where the host's files (sandbox namespaces) are seen from this process.
    """

    def __init__(self, root: str = "") -> None:
        self.prefix = host_root(root).rstrip("/")

    ensure_bridge = staticmethod(netlink.ensure_bridge)
    ensure_veth = staticmethod(netlink.ensure_veth)
    delete_link = staticmethod(netlink.delete_link)
    link_exists = staticmethod(netlink.link_exists)
    links_with_prefix = staticmethod(netlink.links_with_prefix)
    links_in_use = staticmethod(netlink.links_in_use)
    allow_bridge = staticmethod(firewall.allow_bridge)
    forget_bridge = staticmethod(firewall.forget_bridge)
    bridges_allowed = staticmethod(firewall.bridges_allowed)
    ensure_vxlan = staticmethod(netlink.ensure_vxlan)
    remote_entries = staticmethod(netlink.remote_entries)
    add_remote = staticmethod(netlink.add_remote)
    remove_remote = staticmethod(netlink.remove_remote)

    def sandbox_exists(self, sandbox_key: str) -> bool:
        """Whether a network namespace is mounted at `sandbox_key`. The file Docker mounts it on can outlive
        the mount (a host that crashed), so the file alone is not enough: it must be a mount point."""
        path = in_root(self.prefix, sandbox_key)
        try:
            return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
        except OSError:
            return False
