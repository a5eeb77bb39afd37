"""Methods that change the model's own weights: the LoRA family through PEFT (lora.py) and full fine-tuning
(full.py). Their modules prepend no prompt rows; the backbone runs its model with the adapters in place."""
