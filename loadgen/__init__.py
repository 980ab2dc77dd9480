"""Berth's load generator: an open-loop HTTP load generator run as its own process.

`python -m loadgen` reads one JSON spec line on stdin and writes JSON event lines on stdout
(`loadgen.generator` says what each one holds); `loadgen.launcher.GeneratorProcess` starts
and controls it from a parent (a Celery task), and `loadgen.histograms` is the one codec for
the HDR histograms it reports. The package imports nothing from Django, so the generator
starts fast and never shares a process with Celery's prefork worker.
"""
