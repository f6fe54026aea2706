"""Raw sources to shards: Chewing Gum generator, KITTI raw and KINS, KINS-Video-Car, FISHBOWL."""
