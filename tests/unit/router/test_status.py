"""Reading /proc/net/tcp and /proc/net/unix: which ports listen (what a restarted router inherits), what is
established, and which unix sockets exist (whatever names the host's programs gave them)."""

from freeflow.router.status import established_tcp, listening_ports, parse_proc_net_unix

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0 100 0 0 10 0
   1: 0200000A:1B58 0300000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 51240 1 0 20 4 30 10 -1
   2: 0200000A:9C41 0300000A:1B59 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_listening_ports_come_from_both_tables_and_only_from_listening_sockets() -> None:
    assert listening_ports(TCP + TCP6) == {7000, 80}


def test_established_connections_have_their_addresses() -> None:
    assert established_tcp(TCP) == [("10.0.0.2:7000", "10.0.0.3:40000")]


def test_proc_net_unix_lines_that_anyone_can_shape_never_break_the_parse():
    """Socket paths are printed as bound: bytes that are not UTF-8, spaces, newlines that make lines of their
    own. Each such line is either a socket or skipped."""
    text = (b"Num       RefCount Protocol Flags    Type St Inode Path\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 101 @x\xff y z\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 102 @freeflow-graft a b\n"
            b"0: 1 2 3 4 5 notanint @injected\n"
            b"0000000000000000: 00000003 00000000 00000000 0001 03 103\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 104 /run/a path\n"
            b"short line\n\n")
    assert parse_proc_net_unix(text) == [(101, "@x\ufffd y z"), (102, "@freeflow-graft a b"), (103, ""),
                                         (104, "/run/a path")]
