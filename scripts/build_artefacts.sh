#!/usr/bin/env bash
# Rebuild the shipped artefacts with the geneval commands themselves (run from the repository
# root, in an environment where geneval is installed). Each step is the exact command that
# produced the shipped file; scripts/README.md records seeds, timings and what each gave.
#
#   bash scripts/build_artefacts.sh [stats] [ddpm] [ncsn] [rbm] [grbm] [ebm]   (default: all)
#
# The digits-cnn weights come first, from scripts/train_digits_cnn.py; the statistics depend
# on them. One thread per training run keeps the tensors reproducible on the CPU.
set -euo pipefail
export OMP_NUM_THREADS=1
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(stats ddpm ncsn rbm grbm ebm)
diffusion=plugins/models/diffusion
energy=plugins/models/energy
for step in "${steps[@]}"; do
  echo "== $step"
  case "$step" in
    stats)
      for split in train val test; do
        geneval stats "digits:$split" -o "reference_stats/digits-$split-digits-cnn.npz" \
          --features --force
      done ;;
    ddpm)  # 12 000 steps, then 24 000 more resumed at a lower learning rate and slower EMA
      geneval train --model ddpm --dataset digits -o $diffusion/ddpm-digits.safetensors --force \
        --seed 0 --steps 12000
      geneval train --model ddpm --dataset digits -o $diffusion/ddpm-digits.safetensors --resume \
        --steps 36000 --opt lr=2e-4 --opt ema_decay=0.9995 --opt save_training_state=false ;;
    ncsn)
      geneval train --model ncsn --dataset digits -o $diffusion/ncsn-digits.safetensors --force \
        --seed 0 --steps 10000 --opt save_training_state=false ;;
    rbm|grbm)
      geneval train --model "$step" --dataset digits -o "$out/$step-digits.safetensors" \
        --force --seed 0 --steps 10000 ;;
    ebm)
      geneval train --model ebm --dataset digits -o $out/ebm-digits.safetensors --force \
        --seed 0 --steps 3000 ;;
    *) echo "unknown step $step (stats, ddpm, ncsn, rbm, grbm, ebm)" >&2; exit 2 ;;
  esac
done
