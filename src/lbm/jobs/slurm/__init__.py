"""The Slurm backend: jobs submitted with sbatch, read back with squeue/sacct; Slurm schedules them."""
