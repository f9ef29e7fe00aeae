"""`full`: every parameter trains."""


def apply_full(model, config, head_modules, peft_task_type=None):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
