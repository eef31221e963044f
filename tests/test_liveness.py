"""nbtrain.liveness: whether the process that started a test evaluation still runs, from real processes."""

import json
import os
import socket
import subprocess
import sys

from nbtrain import liveness
from nbtrain.liveness import ProcessId

_REPORT_AND_WAIT = """
import json, sys
from nbtrain import liveness
print(json.dumps(liveness.this_process().to_dict()), flush=True)
sys.stdin.read()  # runs until the parent closes its stdin
"""


def test_a_running_process_is_running_and_an_ended_one_ended():
    child = subprocess.Popen([sys.executable, "-c", _REPORT_AND_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    owner = ProcessId.from_dict(json.loads(child.stdout.readline()))
    assert owner.pid == child.pid and owner.host == socket.gethostname()
    assert liveness.state(owner) == liveness.RUNNING
    child.stdin.close()
    child.wait(timeout=60)
    assert liveness.state(owner) == liveness.ENDED


def test_a_reused_pid_is_not_the_same_process():
    """The pid of a live process, with another start time: the process that started it ended long ago."""
    me = liveness.this_process()
    assert me.started is not None  # Linux: boot id and start ticks
    assert liveness.state(me) == liveness.RUNNING
    assert liveness.state(ProcessId(pid=me.pid, host=me.host, started=me.started + "0")) == liveness.ENDED


def test_another_hosts_process_cannot_be_seen():
    me = liveness.this_process()
    assert liveness.state(ProcessId(pid=me.pid, host=me.host + "-elsewhere", started=me.started)) == liveness.UNKNOWN
