"""Custom socket types of the pack (core's LORA_MODEL is reused for trained LoRAs)."""

TEACHER = "VLM_TEACHER"      # a loaded tto_engine.VLMTeacher
QUERIES = "REWARD_QUERIES"   # a tuple of tto_engine.Query
LORA_ATTACHMENT = "vlm_teacher.lora_spec"  # key of the LoRASpec that LoRAAttach puts on a MODEL clone
