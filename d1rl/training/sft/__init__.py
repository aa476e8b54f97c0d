"""Masked-diffusion SFT on the training engine: config schemas (:mod:`.config`), data (:mod:`.data`) and the
trainer (:mod:`.trainer`). Entry point: ``d1rl sft`` (:func:`d1rl.training.commands.sft_main`)."""
