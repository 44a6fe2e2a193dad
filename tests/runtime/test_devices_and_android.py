"""Device profiles as data, and the adb / dumpsys pieces of the emulator profiler.

The meminfo fixtures follow the layout ``dumpsys meminfo`` prints on Android 14 and Android 8
(as documented on developer.android.com and in AOSP's ActivityThread dumpMemInfoTable); they were
typed from that documented format, not captured on this machine, which has no device.
"""

from pathlib import Path

import pytest

from mobile_peft.core.errors import ConfigError, MobilePeftError
from mobile_peft.runtime.android import AdbDevice, parse_meminfo, peak
from mobile_peft.runtime.devices import device_names, get_device

FIXTURES = Path(__file__).parent / "fixtures"
REQUIRED = {"galaxy-a14", "pixel-7", "pixel-8-pro", "iphone-12", "iphone-15-pro", "host"}


def test_required_profiles_exist_with_sources_and_sane_numbers():
    assert REQUIRED <= set(device_names())
    for name in REQUIRED - {"host"}:
        d = get_device(name)
        assert d.sources and d.app_budget_note
        assert 0 < d.app_budget_bytes < d.ram_bytes
        assert 1 <= d.big_cores <= d.cpu_cores and d.big_core_ghz > 1
    assert get_device("galaxy-a14").ram_bytes == 4 * 2**30
    assert get_device("pixel-8-pro").ram_bytes == 12 * 2**30


def test_host_profile_reads_this_machine():
    host = get_device("host")
    assert host.ram_bytes > 0 and 0 < host.app_budget_bytes <= host.ram_bytes and host.cpu_cores >= 1


def test_unknown_device_lists_the_choices():
    with pytest.raises(ConfigError, match="pixel-7"):
        get_device("nokia-3310")


def test_parse_meminfo_android14():
    info = parse_meminfo((FIXTURES / "meminfo_android14.txt").read_text())
    assert info.pid == 21936 and info.process == "org.mobilepeft.demo"
    assert info.total_pss == 212526 * 1024 and info.total_rss == 268796 * 1024
    assert info.native_heap_pss == 107179 * 1024
    assert info.summary["native_heap"] == 107140 * 1024 and info.summary["graphics"] == 16232 * 1024


def test_parse_meminfo_android8_has_no_rss():
    info = parse_meminfo((FIXTURES / "meminfo_android8.txt").read_text())
    assert info.total_pss == 31450 * 1024 and info.total_rss is None and info.summary["java_heap"] == 15364 * 1024


def test_parse_meminfo_rejects_output_without_totals():
    with pytest.raises(MobilePeftError, match="TOTAL"):
        parse_meminfo("No process found for: 1234\n")


def test_adb_device_samples_until_the_process_exits():
    recorded = (FIXTURES / "meminfo_android14.txt").read_text()
    calls = []
    alive = iter(["alive\n", "alive\n", ""])

    def fake(args):
        calls.append(list(args))
        command = args[-1]
        if command.startswith("ls /proc/"):
            return next(alive)
        if command.startswith("dumpsys meminfo"):
            return recorded
        return ""

    device = AdbDevice(serial="emulator-5554", run=fake)
    samples = device.sample_while_running(21936, interval_s=0)
    assert len(samples) == 2
    assert calls[0][:3] == ["adb", "-s", "emulator-5554"]
    assert peak(samples) == {"peak_pss_bytes": 212526 * 1024, "peak_rss_bytes": 268796 * 1024, "samples": 2}
    with pytest.raises(MobilePeftError, match="no dumpsys"):
        peak([])
