"""Networks of the policy: image and text encoders, the observation encoder and the conditional 1-D UNet."""
