_base_ = ["../digits.py", "_base_/default_runtime.py", "_base_/schedules/schedule_20k.py"]
