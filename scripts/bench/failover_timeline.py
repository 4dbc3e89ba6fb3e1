#!/usr/bin/env python3
# Per-step timeline of the kill -9 failovers of a failover benchmark run (issue 13): reads the
# "BENCH trial N: killed M at HH:MM:SS.mmm" lines of the benchmark output and the whole logs the
# test kept (BENCH_LOG_DIR), prints a Markdown table: milliseconds from each kill to each step.
#
#   BENCH_LOG_DIR=/tmp/ha-logs TRIALS=8 SWITCHOVERS=0 PROFILE=debug scripts/bench/failover.sh > out
#   scripts/bench/failover_timeline.py /tmp/ha-logs out
import re, sys, glob, datetime
d = sys.argv[1]; bench = sys.argv[2]
def ts(line):
    m = re.match(r'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z', line)
    return datetime.datetime.fromisoformat(m.group(1)[:26]) if m else None
lines = []
for f in glob.glob(d + '/*.log'):
    src = f.split('/')[-1][:-4]
    for l in open(f, errors='replace'):
        t = ts(l)
        if t: lines.append((t, src, l))
lines.sort(key=lambda x: x[0])
trials = []
for l in open(bench):
    m = re.match(r'BENCH trial (\d+): killed (\S+) at (\S+) first commit on the new primary after (\d+) ms', l)
    if m:
        day = lines[0][0].date()
        k = datetime.datetime.combine(day, datetime.time.fromisoformat(m.group(3)))
        trials.append((int(m.group(1)), m.group(2), k, int(m.group(4))))
steps = [
  ('walreceiver lost', lambda s, l: s != 'controller-1' and 'could not receive data from WAL stream' in l),
  ('sidecar saw it', lambda s, l: 'lost the primary:' in l),
  ('push at controller', lambda s, l: 'reports primary-lost' in l),
  ('check 1 (round)', lambda s, l: 'failed check 1 of' in l),
  ('check 2', lambda s, l: 'failed check 2 of' in l),
  ('check 3 + survey', lambda s, l: 'failed check 3 of' in l),
  ('decided', lambda s, l: 'checks in a row and' in l),
  ('failover started', lambda s, l: 'fencing_primary:' in l),
  ('fenced, rw held', lambda s, l: re.search(r'fenced \S+ through', l)),
  ('promote asked', lambda s, l: 'promoting this standby' in l),
  ('promoted (sidecar)', lambda s, l: 'promoted: accepting writes' in l),
  ('promoted (controller)', lambda s, l: 'updating_routing:' in l),
  ('rw routed', lambda s, l: 'routing the instance' in l and 'rw=Some' in l),
  ('other standby streams', lambda s, l: 'is now a synchronous standby' in l),
  ('on the new timeline', lambda s, l: 'restarted WAL streaming' in l),
]
print('| step | ' + ' | '.join(f'trial {n}' for n, *_ in trials) + ' |')
print('|---|' + '---|' * len(trials))
rows = {name: [] for name, _ in steps}
for n, victim, k, total in trials:
    after = [(t, s, l) for t, s, l in lines if t >= k and (t - k).total_seconds() < total / 1000 + 0.5]
    for name, pred in steps:
        hit = next(((t - k).total_seconds() * 1000 for t, s, l in after if pred(s, l)), None)
        rows[name].append(hit)
for name, _ in steps:
    print(f'| {name} | ' + ' | '.join('-' if v is None else f'{v:.0f}' for v in rows[name]) + ' |')
print('| first commit (client) | ' + ' | '.join(str(t[3]) for t in trials) + ' |')
