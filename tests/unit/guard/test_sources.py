"""The source guard: token-bucket rate, bans and their expiry, escalation, the allow-list,
authentication-failure bans and user lockout, bounded tables (a fake ``now``)."""

from __future__ import annotations

from scaserver.guard.sources import ALLOWED_MEMORY, BanReason, SecuritySettings, SourceGuard

FLOODER = "192.0.2.66"
OTHER = "192.0.2.7"


def guard(*, max_bans: int = 16384, **kw: object) -> SourceGuard:
    settings = SecuritySettings(**{"rate": 10.0, "burst": 20.0, "ban_s": 60.0, **kw})  # type: ignore[arg-type]
    return SourceGuard(settings, max_bans=max_bans)


def test_a_source_within_its_burst_and_rate_is_admitted() -> None:
    g = guard()
    assert all(g.check(OTHER, 0.0).admitted for _ in range(20))
    # 10 per second refill: one message every 0.1 s is sustainable for ever.
    assert all(g.check(OTHER, 1.0 + i * 0.1).admitted for i in range(500))
    assert g.bans(100.0) == [] and g.dropped_total == 0


def test_the_first_message_over_the_rate_bans_the_source_and_later_ones_are_dropped() -> None:
    g = guard()
    verdicts = [g.check(FLOODER, 0.0) for _ in range(21)]
    assert all(v.admitted for v in verdicts[:20])
    last = verdicts[20]
    assert not last.admitted and last.ban is not None
    assert (last.ban.host, last.ban.reason, last.ban.since, last.ban.until) == (
        FLOODER,
        BanReason.RATE,
        0.0,
        60.0,
    )
    dropped = [g.check(FLOODER, 30.0) for _ in range(5)]
    assert not any(v.admitted for v in dropped) and all(v.ban is None for v in dropped)
    assert g.dropped_total == 6
    assert g.check(OTHER, 30.0).admitted  # another address is not affected
    assert g.bans_total[BanReason.RATE] == 1 and g.active_bans(30.0) == 1


def test_a_ban_expires_and_a_repeat_offence_doubles_it() -> None:
    g = guard(max_ban_s=100.0)
    for _ in range(21):
        g.check(FLOODER, 0.0)
    assert g.is_banned(FLOODER, 59.9)
    assert not g.is_banned(FLOODER, 60.0)
    assert g.check(FLOODER, 60.0).admitted and g.bans(60.0) == []
    second = [g.check(FLOODER, 61.0) for _ in range(21)][-1].ban
    assert second is not None and (second.offence, second.duration_s) == (2, 100.0)  # 120 capped at 100


def test_allowed_networks_and_trusted_peers_are_never_limited() -> None:
    g = SourceGuard(SecuritySettings(rate=1.0, burst=1.0, allow=("198.51.100.0/24",)), lambda h: h == OTHER)
    assert all(g.check("198.51.100.9", 0.0).admitted for _ in range(1000))
    assert all(g.check(OTHER, 0.0).admitted for _ in range(1000))
    assert g.auth_failed(OTHER, "alice", "example.com", 0.0) is None
    assert g.bans(0.0) == []
    assert g.check(FLOODER, 0.0).admitted and not g.check(FLOODER, 0.0).admitted


def test_auth_failures_within_the_window_ban_the_source() -> None:
    g = guard(auth_failures=5, auth_window_s=60.0)
    bans = [g.auth_failed(FLOODER, "alice", "example.com", float(i)) for i in range(5)]
    assert bans[:4] == [None] * 4
    ban = bans[4]
    assert ban is not None and (ban.reason, ban.host, ban.until) == (BanReason.AUTH, FLOODER, 64.0)
    assert not g.check(FLOODER, 5.0).admitted


def test_auth_failures_spread_wider_than_the_window_do_not_ban() -> None:
    g = guard(auth_failures=5, auth_window_s=60.0)
    assert all(g.auth_failed(OTHER, "alice", "example.com", i * 20.0) is None for i in range(20))
    assert g.bans(400.0) == []


def test_a_user_is_locked_out_after_failures_from_many_sources() -> None:
    g = guard(user_failures=3, auth_failures=5)
    for index in range(3):
        g.auth_failed(f"203.0.113.{index}", "alice", "example.com", 1.0)
    assert g.user_locked("alice", "example.com", 2.0)
    assert not g.user_locked("bob", "example.com", 2.0)
    assert not g.user_locked("alice", "other.example", 2.0)
    assert not g.user_locked("alice", "example.com", 61.0)  # ban_s later


def test_unban_lifts_the_ban_and_forgets_the_history() -> None:
    g = guard()
    for _ in range(21):
        g.check(FLOODER, 0.0)
    assert g.unban(FLOODER)
    assert not g.unban(FLOODER)
    assert g.check(FLOODER, 0.0).admitted


def test_tables_stay_bounded_under_a_flood_from_many_addresses() -> None:
    g = guard(max_sources=100, max_bans=10, rate=1.0, burst=1.0)
    for index in range(5000):
        host = f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"
        g.check(host, 0.0)
        g.check(host, 0.0)  # over the rate: banned
        g.auth_failed(host, f"user{index}", "example.com", 0.0)
    assert max(g.tables.values()) <= 100
    assert g.tables["bans"] == 10
    assert g.bans_total[BanReason.RATE] == 5000


def test_ipv6_and_mapped_addresses_match_the_allow_list() -> None:
    g = SourceGuard(SecuritySettings(allow=("192.0.2.0/24", "2001:db8::/32")))
    assert g.is_allowed("::ffff:192.0.2.1")
    assert g.is_allowed("[2001:db8::1]")
    assert not g.is_allowed("2001:db9::1")
    assert not g.is_allowed("not-an-address")


def test_allow_list_verdicts_are_remembered_per_host_and_trust_is_asked_every_time() -> None:
    trusted: set[str] = set()
    g = SourceGuard(SecuritySettings(allow=("192.0.2.0/24",)), trusted=lambda host: host in trusted)
    assert g.is_allowed("192.0.2.7")
    assert not g.is_allowed("198.51.100.1")
    trusted.add("198.51.100.1")  # the trusted peers changed: not a remembered refusal
    assert g.is_allowed("198.51.100.1")
    for index in range(ALLOWED_MEMORY + 10):  # past the bound the memory starts again
        assert not g.is_allowed(f"10.0.{index // 256}.{index % 256}")
    assert g.is_allowed("192.0.2.7")
    assert g.is_allowed("198.51.100.1")
    assert not g.is_allowed("203.0.113.1")


def test_an_allowed_host_seen_before_is_admitted_untracked_and_a_trusted_one_still_asked() -> None:
    trusted: set[str] = set()
    g = SourceGuard(SecuritySettings(rate=1.0, burst=1.0, allow=("192.0.2.0/24",)), lambda h: h in trusted)
    assert all(g.check("192.0.2.7", 0.0).admitted for _ in range(100))
    assert g.tracked_sources == 0
    trusted.add("198.51.100.1")
    assert g.check("198.51.100.1", 0.0).admitted
    assert g.tracked_sources == 0
    assert g.check("203.0.113.9", 0.0).admitted and not g.check("203.0.113.9", 0.0).admitted


def test_the_ban_table_is_one_mapping_that_follows_bans_and_unbans() -> None:
    g = guard()
    table = g.ban_table
    assert FLOODER not in table
    ban = g.ban(FLOODER, BanReason.MANUAL, 0.0)
    assert table[FLOODER] == ban
    g.unban(FLOODER)
    assert FLOODER not in table
    g.ban(OTHER, BanReason.MANUAL, 0.0, duration_s=1.0)
    assert g.bans(5.0) == []
    assert OTHER not in table
    assert g.ban_table is table
