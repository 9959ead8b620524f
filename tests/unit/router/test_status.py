"""Reading /proc/net/tcp: which ports listen (what a restarted router inherits) and what is established."""

from freeflow.router.status import established_tcp, listening_ports

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
