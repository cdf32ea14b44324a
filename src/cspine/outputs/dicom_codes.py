"""The coded concepts cspine's DICOM objects use, in one place (values from pydicom's DICOM code
dictionaries where the standard lists them).

* C1..C7: SNOMED CT 14806007, 39976000, 113205007, 5329002, 36978003, 36054005, 87391001 (CID 7151
  Segmentation Property Types, CID 7602/7603 vertebrae), category "Anatomical Structure" (SCT 91723000).
* "Fracture of bone": SNOMED CT 125605004 (a disorder concept; not in pydicom's dictionary).
* Present / Absent: SCT 52101004 / 272519000 (CID 240 "Present-Absent").
* Probability: DCM 122157 "Probability", unit UCUM ``{probability}``.
"""

from __future__ import annotations

from typing import Any

from cspine.labels import VERTEBRAE

__all__ = ["FRACTURE_OF_BONE", "PROBABILITY_UNIT", "VERTEBRA_CODE_NAMES", "code", "vertebra_code"]

#: pydicom ``codes.SCT`` attribute of each vertebra.
VERTEBRA_CODE_NAMES: dict[str, str] = {v: f"{v}Vertebra" for v in VERTEBRAE}
FRACTURE_OF_BONE = ("125605004", "SCT", "Fracture of bone")
PROBABILITY_UNIT = ("{probability}", "UCUM", "probability")


def code(value: str, scheme: str, meaning: str) -> Any:
    """A highdicom ``CodedConcept``."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def vertebra_code(name: str) -> Any:
    """The SNOMED CT code of ``C1``..``C7`` (pydicom's ``codes.SCT.C1Vertebra``...)."""
    from pydicom.sr.codedict import codes

    if name not in VERTEBRA_CODE_NAMES:
        raise ValueError(f"no code for {name!r}; expected one of {', '.join(VERTEBRAE)}")
    return getattr(codes.SCT, VERTEBRA_CODE_NAMES[name])
