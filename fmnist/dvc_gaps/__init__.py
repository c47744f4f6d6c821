"""Where DVC 3.67.1 falls short of what a team sharing one remote needs, each module citing the upstream issue it
works around; `tests/test_dvc_canaries.py` fails once DVC itself behaves, so the workaround can go."""
