_base_ = ["../digits.py", "_base_/default_runtime.py", "_base_/schedules/imagenet_bs256.py"]
