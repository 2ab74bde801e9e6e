#!/usr/bin/env bash
# Rebuild the shipped artefacts with the geneval commands themselves (run from the repository
# root, in an environment where geneval is installed). Each step is the exact command that
# produced the shipped file; scripts/README.md records seeds, timings and what each gave.
#
#   bash scripts/build_artefacts.sh [stats] [ddpm] [ncsn] [rbm] [grbm] [ebm] [vae]   (default: all)
#
# The digits-cnn weights come first, from scripts/train_digits_cnn.py; the statistics depend
# on them. One thread per training run keeps the tensors reproducible on the CPU.
set -euo pipefail
export OMP_NUM_THREADS=1
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(stats ddpm ncsn rbm grbm ebm vae)
diffusion=plugins/models/diffusion
energy=plugins/models/energy
latent=plugins/models/latent
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
        --steps 36000 --opt lr=2e-4 --opt ema_decay=0.9995 --opt save_training_state=false \
        --opt ddim_skip=quadratic ;;
    ncsn)
      geneval train --model ncsn --dataset digits -o $diffusion/ncsn-digits.safetensors --force \
        --seed 0 --steps 10000 --opt save_training_state=false ;;
    rbm)  # exact maximum likelihood (16 hidden units, enumerated at every step)
      geneval train --model rbm --dataset digits -o $energy/rbm-digits.safetensors --force \
        --seed 0 --steps 3000 --opt lr=3e-3 --opt weight_decay=0 ;;
    grbm)  # exact maximum likelihood, fixed σ = 0.3
      geneval train --model grbm --dataset digits -o $energy/grbm-digits.safetensors --force \
        --seed 0 --steps 3000 --opt lr=3e-3 --opt weight_decay=0 --opt sigma=0.3 \
        --opt learn_sigma=false ;;
    ebm)  # noise-conditional energy, 12 levels down to 0.1, annealed Langevin sampling
      geneval train --model ebm --dataset digits -o $energy/ebm-digits.safetensors --force \
        --seed 0 --steps 16000 --opt noise_levels=12 --opt dsm_sigma=0.1 --opt sample_steps=10 \
        --opt ema_decay=0.999 --opt save_training_state=false ;;
    vae)  # 2000 steps: the validation bound is best there (1257 images overfit soon after)
      geneval train --model vae --dataset digits -o $latent/vae-digits.safetensors --force \
        --seed 0 --steps 2000 --opt save_training_state=false ;;
    *) echo "unknown step $step (stats, ddpm, ncsn, rbm, grbm, ebm, vae)" >&2; exit 2 ;;
  esac
done
