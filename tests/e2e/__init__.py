"""End-to-end tier: the real ``pacsnode`` CLI, dcmtk ``storescu``/``echoscu`` as the
modality and a real Orthanc as the PACS; every object the node sends is run through
``dciodvfy``."""
