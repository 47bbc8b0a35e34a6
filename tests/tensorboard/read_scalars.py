"""Every scalar TensorBoard itself finds under a log directory, as
`tensorboard --logdir DIR` would show it: one run per stage folder
(following the runs/<pipeline>/<stage> links into the cache), read with
TensorBoard's own event reader. Prints {run: {tag: [[step, value], ...]}}.

    python read_scalars.py runs/<pipeline>
"""

import json
import sys

from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer


def main():
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(sys.argv[1])
    mux.Reload()
    out = {}
    for run, tags in mux.Runs().items():
        out[run] = {
            tag: [[e.step, e.value] for e in mux.Scalars(run, tag)]
            for tag in tags.get("scalars", [])
        }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
