"""Constants with the names and values of the original LLaVA package."""

CONTROLLER_HEART_BEAT_EXPIRATION = 30
WORKER_HEART_BEAT_INTERVAL = 15
LOGDIR = "."

# Model constants
IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200  # placeholder id of the image slot in tokenized prompts
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
IMAGE_PLACEHOLDER = "<image-placeholder>"

# POPE: the suffix LLaVA-1.5 appends to every POPE question.
POPE_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
