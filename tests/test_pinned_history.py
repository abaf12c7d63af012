"""Pinned histories: a recipe and seed give these exact numbers.

Recorded on main before the one-engine refactor (build / train_step / Trainer) began, with one
torch thread (tests/conftest.py). Any change to the order of random draws, the step, the LR
owners or the evaluation shows up here as a changed number. Timing (`seconds`) is left out.

- default: the built-in recipe (digits, MLP 256-128, batch norm, dropout, Adam, cosine), 3 epochs;
- step_parts: every part of the training step at once: accumulation, clip by value and by norm,
  L1 + L2 penalties, decoupled weight decay (adamw), noise + mixup augmentation, warmup, EMA;
- lr_owners: every owner of the learning rate at once: reduce_on_plateau (with its min_lr floor)
  and the SWA phase's annealed rate, on SGD.
"""

import pytest

import trainwell

CASES = {
    "default": {"train.epochs": 3},
    "step_parts": {"train.epochs": 3, "model.hidden": [32], "train.accumulate": 2, "train.clip_norm": 2.0,
                   "train.clip_value": 1.0, "regularization.l1": 1e-5, "regularization.l2": 1e-4,
                   "optimizer.kind": "adamw", "optimizer.weight_decay": 0.01, "data.augment.noise_std": 0.05,
                   "data.augment.mixup_alpha": 0.2, "schedule.warmup_epochs": 1.0, "train.ema_decay": 0.9},
    "lr_owners": {"train.epochs": 6, "model.hidden": [32], "optimizer.kind": "sgd", "optimizer.lr": 0.05,
                  "schedule.kind": "reduce_on_plateau", "schedule.monitor": "train_accuracy",
                  "schedule.patience": 0, "schedule.factor": 0.5, "schedule.threshold": 0.5,
                  "schedule.min_lr": 0.02, "train.swa.start_epoch": 5, "train.swa.lr": 0.01},
}

# (history rows without `seconds`, test metrics of the returned model)
PINNED = {
    'default': (
     [{'epoch': 1, 'train_loss': 1.8219427841271452, 'val_loss': 1.1644024848937988, 'lr': 0.00075, 'grad_norm': 1.774133009069106, 'train_accuracy': 0.44619667530059814, 'train_f1': 0.42947816848754883, 'val_accuracy': 0.796657383441925, 'val_f1': 0.7776151299476624},
      {'epoch': 2, 'train_loss': 0.9530917080965909, 'val_loss': 0.845070481300354, 'lr': 0.0002500000000000001, 'grad_norm': 1.1899250254911535, 'train_accuracy': 0.8061224222183228, 'train_f1': 0.7915541529655457, 'val_accuracy': 0.8690807819366455, 'val_f1': 0.8637444972991943},
      {'epoch': 3, 'train_loss': 0.7824318625710227, 'val_loss': 0.8103885054588318, 'lr': 0.0, 'grad_norm': 1.028538984410903, 'train_accuracy': 0.8682745695114136, 'train_f1': 0.8622245192527771, 'val_accuracy': 0.8857938647270203, 'val_f1': 0.8832359910011292}],
      {'loss': 0.7481540441513062, 'accuracy': 0.8805555701255798, 'f1': 0.8774945735931396} ),
    'step_parts': (
     [{'epoch': 1, 'train_loss': 2.451286018668831, 'val_loss': 2.426266670227051, 'lr': 0.0009903926402016153, 'grad_norm': 0.8282809257507324, 'train_accuracy': 0.12430426478385925, 'train_f1': 0.10606342554092407, 'val_accuracy': 0.13370473682880402, 'val_f1': 0.09445404261350632},
      {'epoch': 2, 'train_loss': 2.3625039859693877, 'val_loss': 2.2891368865966797, 'lr': 0.0003086582838174551, 'grad_norm': 0.7607037756178114, 'train_accuracy': 0.12708720564842224, 'train_f1': 0.10509245842695236, 'val_accuracy': 0.1532033383846283, 'val_f1': 0.11512594670057297},
      {'epoch': 3, 'train_loss': 2.267518561934717, 'val_loss': 2.2814197540283203, 'lr': 0.0, 'grad_norm': 0.741319497426351, 'train_accuracy': 0.144712433218956, 'train_f1': 0.12213413417339325, 'val_accuracy': 0.15598885715007782, 'val_f1': 0.12204841524362564}],
      {'loss': 2.331691265106201, 'accuracy': 0.20555555820465088, 'f1': 0.16968679428100586} ),
    'lr_owners': (
     [{'epoch': 1, 'train_loss': 2.2627424194109462, 'val_loss': 2.0749218463897705, 'lr': 0.05, 'grad_norm': 0.9974279964671415, 'train_accuracy': 0.18831168115139008, 'train_f1': 0.16888639330863953, 'val_accuracy': 0.24791085720062256, 'val_f1': 0.22083145380020142},
      {'epoch': 2, 'train_loss': 1.912918572080821, 'val_loss': 1.7881784439086914, 'lr': 0.05, 'grad_norm': 0.8931921790627873, 'train_accuracy': 0.3868274688720703, 'train_f1': 0.35676801204681396, 'val_accuracy': 0.4930362105369568, 'val_f1': 0.457302063703537},
      {'epoch': 3, 'train_loss': 1.646657402307514, 'val_loss': 1.5635408163070679, 'lr': 0.05, 'grad_norm': 0.8066842135261086, 'train_accuracy': 0.5389610528945923, 'train_f1': 0.493809312582016, 'val_accuracy': 0.6128133535385132, 'val_f1': 0.5809662938117981},
      {'epoch': 4, 'train_loss': 1.4694708716227969, 'val_loss': 1.469711422920227, 'lr': 0.025, 'grad_norm': 0.7717983582440544, 'train_accuracy': 0.6372912526130676, 'train_f1': 0.5989444255828857, 'val_accuracy': 0.6490250825881958, 'val_f1': 0.6151847839355469},
      {'epoch': 5, 'train_loss': 1.3835829697646105, 'val_loss': 1.402991533279419, 'lr': 0.01, 'grad_norm': 0.7555395014145795, 'train_accuracy': 0.6604823470115662, 'train_f1': 0.6232922077178955, 'val_accuracy': 0.6629526615142822, 'val_f1': 0.6279342770576477},
      {'epoch': 6, 'train_loss': 1.329171543439819, 'val_loss': 1.3815572261810303, 'lr': 0.01, 'grad_norm': 0.7411105212043313, 'train_accuracy': 0.6864563822746277, 'train_f1': 0.6449204683303833, 'val_accuracy': 0.688022255897522, 'val_f1': 0.6585155129432678}],
      {'loss': 1.386922001838684, 'accuracy': 0.7138888835906982, 'f1': 0.6820847988128662} ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_recipe_and_seed_give_the_pinned_history(name):
    run = trainwell.fit(out=False, quiet=True, **CASES[name])
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in run.history]
    rows, test = PINNED[name]
    assert len(history) == len(rows)
    for got, want in zip(history, rows):       # columns added later (new metrics) are not pinned
        assert {k: got.get(k) for k in want} == want, f"epoch {want['epoch']}: " + ", ".join(
            f"{k} {got.get(k)!r} != {v!r}" for k, v in want.items() if got.get(k) != v)
    assert {k: run.metrics["test"].get(k) for k in test} == test
