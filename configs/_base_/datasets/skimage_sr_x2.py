# x2 super-resolution on patches of photos that ship with scikit-image (nothing downloaded). Training uses
# astronaut, rocket and immunohistochemistry; validation and test hold out chelsea and coffee.
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(shuffle=True),
    dataset=dict(type="SkimageSRDataset", split="train", scale=2, patch_size=48),
)
val_dataloader = dict(batch_size=12, num_workers=0,
                      dataset=dict(type="SkimageSRDataset", split="val", scale=2, patch_size=96))
test_dataloader = dict(batch_size=12, num_workers=0,
                       dataset=dict(type="SkimageSRDataset", split="test", scale=2, patch_size=96))
# As SR papers report: luma channel, the scale factor cropped from every border. The bicubic input is
# scored by the same metrics under the "bicubic/" prefix, so the baseline sits beside the model's numbers.
val_evaluator = [
    dict(type="PSNR", crop_border=2, convert_to="Y"),
    dict(type="SSIM", crop_border=2, convert_to="Y"),
    dict(type="PSNR", crop_border=2, convert_to="Y", pred_key="inputs", prefix="bicubic"),
    dict(type="SSIM", crop_border=2, convert_to="Y", pred_key="inputs", prefix="bicubic"),
]
test_evaluator = val_evaluator
