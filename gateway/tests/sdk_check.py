"""The real `orgo` SDK (0.0.47, unchanged) against our gateway, each call checked for its effect.

Effects are read inside the desktop: an `xev` window records the pointer and keyboard events the
desktop actually received; files show that bash ran and that files survive a restart.
Environment: ORGO_API_KEY, ORGO_BASE_URL. Exits non-zero at the first failed check.
"""

import io
import os
import re
import sys
import time

from orgo import Computer, Project
from PIL import Image

BASE = os.environ["ORGO_BASE_URL"]
passed = 0


def check(what, ok, detail=""):
    global passed
    if not ok:
        print(f"FAILED: {what} {detail}", flush=True)
        sys.exit(1)
    passed += 1
    print(f"ok: {what}", flush=True)


def events(computer):
    """xev's event blocks so far, as dicts: kind, button, root (x, y), time, state, keysym."""
    log = computer.bash("cat /tmp/xev.log")
    out = []
    for block in log.split("\n\n"):
        head = block.strip().split(" ", 1)[0]
        if head not in ("ButtonPress", "ButtonRelease", "MotionNotify", "KeyPress"):
            continue
        e = {"kind": head}
        if m := re.search(r"root:\((-?\d+),(-?\d+)\)", block):
            e["root"] = (int(m[1]), int(m[2]))
        if m := re.search(r"button (\d+)", block):
            e["button"] = int(m[1])
        if m := re.search(r"time (\d+)", block):
            e["time"] = int(m[1])
        if m := re.search(r"state (0x[0-9a-f]+)", block):
            e["state"] = int(m[1], 16)
        if m := re.search(r"keysym (0x[0-9a-f]+)", block):
            e["keysym"] = int(m[1], 16)
        out.append(e)
    return out


def new_events(computer, seen, kinds, count, timeout=10):
    """Waits until `count` new events of `kinds` arrived after the first `seen`; answers them."""
    deadline = time.time() + timeout
    while True:
        fresh = [e for e in events(computer)[seen:] if e["kind"] in kinds]
        if len(fresh) >= count or time.time() > deadline:
            return fresh


project = Project("sdk-check", base_api_url=BASE)
check("Project() creates a workspace", bool(project.id))
computer = Computer(project=project, base_api_url=BASE, verbose=False)
check("Computer(project=...) creates a computer", bool(computer.computer_id))
check("status() is running", computer.status().get("status") == "running", computer.status())
check("the project lists it", [c["id"] for c in project.list_computers()] == [computer.computer_id])

check("bash output", computer.bash("echo hello") == "hello\n")
computer.bash("xev -geometry 700x500+0+0 -name orgo-probe > /tmp/xev.log 2>&1 &")
deadline = time.time() + 20
while "orgo-probe" not in computer.bash("xwininfo -root -tree 2>/dev/null | grep orgo-probe || true"):
    check("the probe window appears", time.time() < deadline)
    time.sleep(0.2)

img = computer.screenshot()
check("screenshot decodes with PIL at 1280x800", img.size == (1280, 800), img.size)
# Drawn once the window manager has mapped it, which on a loaded machine (a test cluster beside)
# takes a while: polled, bounded. A screenshot kept from before the window (a stale answer of the
# agent's unchanged-screen reuse) would stay black and fail this. On the test cluster's
# half-core Pods openbox has been seen to leave the window unmapped for over 20 s (not
# understood; the failure says what openbox was doing).
deadline = time.time() + 60
while img.convert("RGB").getpixel((300, 250)) == (0, 0, 0) and time.time() < deadline:
    time.sleep(0.2)
    img = computer.screenshot()
check(
    "screenshot shows the probe window",
    img.convert("RGB").getpixel((300, 250)) != (0, 0, 0),
    computer.bash(
        "xwininfo -name orgo-probe 2>&1 | grep -E 'Map State|Absolute|error'; pgrep -a openbox; pgrep -a xev; "
        "for p in $(pgrep openbox); do grep -E 'State|ctxt' /proc/$p/status; echo wchan $(cat /proc/$p/wchan); done"
    ),
)

seen = len(events(computer))
computer.left_click(300, 250)
got = new_events(computer, seen, ("ButtonPress",), 1)
check("left_click arrives", [(e["button"], e["root"]) for e in got] == [(1, (300, 250))], got)

seen = len(events(computer))
computer.right_click(320, 260)
got = new_events(computer, seen, ("ButtonPress",), 1)
check("right_click arrives", [(e["button"], e["root"]) for e in got] == [(3, (320, 260))], got)

seen = len(events(computer))
computer.double_click(400, 300)
got = new_events(computer, seen, ("ButtonPress",), 2)
check("double_click is two presses", [(e["button"], e["root"]) for e in got] == [(1, (400, 300))] * 2, got)
check("inside the double-click interval", len(got) == 2 and got[1]["time"] - got[0]["time"] < 400, got)

seen = len(events(computer))
computer.drag(200, 200, 500, 350, duration=0.3)
got = new_events(computer, seen, ("ButtonPress", "ButtonRelease", "MotionNotify"), 3)
presses = [e for e in got if e["kind"] == "ButtonPress"]
releases = [e for e in got if e["kind"] == "ButtonRelease"]
held = [e for e in got if e["kind"] == "MotionNotify" and e.get("state", 0) & 0x100]
check("drag presses at the start", [e["root"] for e in presses] == [(200, 200)], got)
check("drag moves with the button held", len(held) >= 5, len(held))
check("drag releases at the end", releases and releases[-1]["root"] == (500, 350), releases)

seen = len(events(computer))
computer.scroll("down", 3, x=300, y=250)
got = new_events(computer, seen, ("ButtonPress",), 3)
check("scroll down is three wheel clicks", [e["button"] for e in got] == [5, 5, 5], got)

seen = len(events(computer))
computer.type("héllo")
got = new_events(computer, seen, ("KeyPress",), 5)
check("type arrives character by character", [e["keysym"] for e in got] == [0x68, 0xE9, 0x6C, 0x6C, 0x6F], got)

seen = len(events(computer))
computer.key("ctrl+a")
got = new_events(computer, seen, ("KeyPress",), 2)
check("key ctrl+a", [e["keysym"] for e in got] == [0xFFE3, 0x61] and got[1]["state"] & 0x4, got)

seen = len(events(computer))
computer.key("Enter")
got = new_events(computer, seen, ("KeyPress",), 1)
check("key Enter", [e["keysym"] for e in got] == [0xFF0D], got)

r = computer.exec("print('Hello from Python')\nfor i in range(3):\n    print(i)")
check("exec output", r.get("success") is True and r.get("output") == "Hello from Python\n0\n1\n2\n", r)
r = computer.exec("while True: pass", timeout=1)
check("exec timeout", r.get("success") is False and r.get("timed_out") is True, r)
check("the next exec works", computer.exec("print(6*7)").get("output") == "42\n")

t = time.time()
computer.wait(1.0)
check("wait waits", time.time() - t >= 1.0)

computer.bash("echo survives > /home/user/mark")
computer.restart()
check("restart: running again", computer.status().get("status") == "running")
check("restart: files survive", computer.bash("cat /home/user/mark") == "survives\n")

computer.destroy()
try:
    computer.status()
    check("destroy removes the computer", False)
except Exception as e:
    check("destroy removes the computer", "not found" in str(e), e)
project.destroy()

print(f"sdk: {passed} passed, 0 failed", flush=True)
