"""The MemoryBench tabletop in pybullet: Panda, table, cabinet, spring button, patches, blocks, cameras.

World frame as RLBench: z up, metres, the table top at z = TABLE_Z, the Panda's base at
(-0.3, 0, TABLE_Z) facing +x. Everything is built with `createMultiBody` (no files written), in a
DIRECT client of its own, so many scenes can live in one process. A second, robot-only client
does inverse kinematics and reachability checks without disturbing the physics.

Action execution (RLBench's `MoveArmThenGripper(EndEffectorPoseViaPlanning(), Discrete())`,
simplified): the end effector moves along a straight Cartesian line with slerped orientation,
each waypoint solved by IK and tracked by the joint position motors with physics stepping (the
task's success check after every step stops the arm early, as RLBench's path loop); then the
gripper opens or closes. A target whose IK residual exceeds `IK_POS_TOL` / `IK_ROT_TOL` is
unreachable (RLBench's planner failure).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

pb = None  # the pybullet module, imported by the first Scene() so that registering these tasks
# (importing embodied.tasks) costs nothing, and needs no pybullet, for commands that never build one


def _import_pybullet():
    global pb
    if pb is None:
        import pybullet

        pb = pybullet
    return pb


def _data_path() -> str:
    import pybullet_data

    return pybullet_data.getDataPath()


def panda_urdf() -> str:
    """pybullet_data's Panda with its collision meshes also used as visual meshes, written once per
    process into a temp dir: the visual meshes are ~50x more triangles and made TinyRenderer
    (CPU) spend most of each step drawing the arm."""
    import tempfile
    from pathlib import Path

    src = Path(_data_path()) / "franka_panda" / "panda.urdf"
    out = Path(tempfile.gettempdir()) / f"embodied-memorybench-{os.getpid()}" / "panda_light.urdf"
    if not out.exists():
        meshes = (src.parent / "meshes" / "collision").as_posix()
        text = src.read_text().replace("package://meshes/visual/", "package://meshes/collision/")
        text = text.replace("package://meshes/collision", meshes)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return str(out)


TABLE_Z = 0.75
ROBOT_BASE = (-0.3, 0.0, TABLE_Z)
CAMERAS = ("front", "left_shoulder", "right_shoulder", "wrist")
PHYSICS_HZ = 240
EE_LINK = 11  # panda_grasptarget: the point between the fingertips
ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
# ee at (0, 0, 1.25) pointing down: above the cabinet, whichever drawer is open
HOME_JOINTS = (0.0, -0.794, 0.0, -2.323, 0.0, 1.5291, math.pi / 4)
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_FORCE = 40.0
IK_POS_TOL = 0.01  # m
IK_ROT_TOL = math.radians(8.0)
PATH_STEP = 0.01  # m of end-effector travel per waypoint
PATH_ROT_STEP = math.radians(4.0)
STEPS_PER_WAYPOINT = 5
SETTLE_STEPS = 40
GRIPPER_STEPS = 60
NEAR, FAR = 0.01, 4.0

# Cabinet (reopen_drawer): carcass front at CABINET_X, drawers open toward the robot (-x).
CABINET_X = 0.36
CABINET_DEPTH = 0.3
CABINET_HALF_WIDTH = 0.18
DRAWER_BASE = 0.05  # centre height of the bottom drawer's front above the table
DRAWER_SPACING = 0.19
FACE_HALF_HEIGHT = 0.03
DRAWER_BOX_HALF_H = 0.025
DRAWER_PROUD = 0.03  # closed fronts stand this far in front of the carcass
DRAWER_OPEN = 0.21  # RLBench's open joint value
DRAWER_LIMIT = 0.25
DRAWER_NAMES = ("bottom", "middle", "top")  # drawer k = variation k
HANDLE_OFFSET = 0.096  # bar centre in front of the drawer's front face
HANDLE_HALF_LENGTH = 0.03
# handles alternate sides so the hand and arm reaching one never sweep the handle of the drawer above
HANDLE_Y = (0.09, -0.09, 0.09)
HANDLE_THICKNESS = 0.012

BLOCK_HALF = 0.025
PATCH_HALF = 0.05
BUTTON_RADIUS = 0.03
BUTTON_TRAVEL = 0.015
BUTTON_TOP = 0.045  # cap top above the table when released

def _quat_from_axes(x, y, z) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.array([x, y, z], dtype=float).T).as_quat()


# The expert's grasp frame (xyzw). The Panda hand's z axis is the approach direction and its y axis
# the finger opening direction: pointing straight down, fingers opening along world y.
QUAT_DOWN = _quat_from_axes((1, 0, 0), (0, -1, 0), (0, 0, -1))

WORKSPACE = ((-0.2, -0.45, TABLE_Z - 0.01), (0.7, 0.45, TABLE_Z + 0.6))


@dataclass
class Region:
    """An axis-aligned detection box (RLBench's proximity sensor volume)."""

    lo: np.ndarray
    hi: np.ndarray

    def contains(self, point) -> bool:
        p = np.asarray(point)
        return bool(np.all(p >= self.lo) and np.all(p <= self.hi))


def patch_region(xy) -> Region:
    """Detection volume over a patch: the block's centre within the patch footprint, resting low."""
    x, y = xy
    return Region(np.array([x - PATCH_HALF, y - PATCH_HALF, TABLE_Z]),
                  np.array([x + PATCH_HALF, y + PATCH_HALF, TABLE_Z + 0.06]))


class Scene:
    """One pybullet world: `reset_world`, then `add_*` objects; `execute` runs a keyframe action."""

    def __init__(self) -> None:
        _import_pybullet()
        self.client = pb.connect(pb.DIRECT)
        self.kin = pb.connect(pb.DIRECT)  # robot-only client for IK and reachability
        self.step_callbacks: list[Callable[[], None]] = []
        self.physics_steps = 0
        self._build_kinematic_robot()

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        for c in (self.client, self.kin):
            try:
                pb.disconnect(c)
            except pb.error:
                pass

    def reset_world(self) -> None:
        """Empty the physics world and add the table and the robot at home."""
        c = self.client
        pb.resetSimulation(physicsClientId=c)
        pb.setGravity(0, 0, -9.81, physicsClientId=c)
        pb.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=c)
        pb.setPhysicsEngineParameter(numSolverIterations=80, deterministicOverlappingPairs=1, physicsClientId=c)
        self.step_callbacks = []
        self.physics_steps = 0
        self.table = self._box((0.75, 0.75, 0.02), (0.15, 0.0, TABLE_Z - 0.02), (0.62, 0.52, 0.38, 1), mass=0)
        pb.setAdditionalSearchPath(_data_path(), physicsClientId=c)
        self.robot = pb.loadURDF(panda_urdf(), ROBOT_BASE, useFixedBase=True,
                                 flags=pb.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT, physicsClientId=c)
        for j, q in zip(ARM_JOINTS, HOME_JOINTS):
            pb.resetJointState(self.robot, j, q, physicsClientId=c)
        for j in FINGER_JOINTS:
            pb.resetJointState(self.robot, j, 0.04, physicsClientId=c)
            pb.changeDynamics(self.robot, j, lateralFriction=1.5, spinningFriction=0.01, physicsClientId=c)
        self.arm_target = np.array(HOME_JOINTS)
        self.gripper_open = 1.0
        self._command(self.arm_target, self.gripper_open)

    # --- building blocks -------------------------------------------------------------------------
    def _box(self, half, pos, rgba, mass=0.0, collide=True, friction=1.0):
        c = self.client
        vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=c)
        col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, physicsClientId=c) if collide else -1
        body = pb.createMultiBody(mass, col, vis, pos, physicsClientId=c)
        if collide:
            pb.changeDynamics(body, -1, lateralFriction=friction, physicsClientId=c)
        return body

    def add_patch(self, xy, rgba) -> int:
        """A flat coloured square on the table (visual only, so blocks rest on the table)."""
        return self._box((PATCH_HALF, PATCH_HALF, 0.001), (xy[0], xy[1], TABLE_Z + 0.001), rgba, collide=False)

    def add_block(self, xy, rgba) -> int:
        b = self._box((BLOCK_HALF,) * 3, (xy[0], xy[1], TABLE_Z + BLOCK_HALF), rgba, mass=0.1, friction=1.2)
        pb.changeDynamics(b, -1, spinningFriction=0.002, rollingFriction=0.0001, physicsClientId=self.client)
        return b

    def add_button(self, xy) -> None:
        """A push button: a fixed housing and a cap on a prismatic joint (+ = pressed) held up by a
        force-limited position motor, i.e. a spring that returns it when released."""
        c = self.client
        base_h = BUTTON_TOP - 0.02
        base_vis = pb.createVisualShape(pb.GEOM_CYLINDER, radius=BUTTON_RADIUS + 0.01, length=base_h,
                                        rgbaColor=(0.2, 0.2, 0.2, 1), physicsClientId=c)
        base_col = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=BUTTON_RADIUS + 0.01, height=base_h,
                                           physicsClientId=c)
        cap_vis = pb.createVisualShape(pb.GEOM_CYLINDER, radius=BUTTON_RADIUS, length=0.02,
                                       rgbaColor=(0.85, 0.1, 0.1, 1), physicsClientId=c)
        cap_col = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=BUTTON_RADIUS, height=0.02, physicsClientId=c)
        self.button = pb.createMultiBody(
            0, base_col, base_vis, (xy[0], xy[1], TABLE_Z + base_h / 2),
            linkMasses=[0.05], linkCollisionShapeIndices=[cap_col], linkVisualShapeIndices=[cap_vis],
            linkPositions=[(0, 0, base_h / 2 + 0.01)], linkOrientations=[(0, 0, 0, 1)],
            linkInertialFramePositions=[(0, 0, 0)], linkInertialFrameOrientations=[(0, 0, 0, 1)],
            linkParentIndices=[0], linkJointTypes=[pb.JOINT_PRISMATIC], linkJointAxis=[(0, 0, -1)],
            physicsClientId=c)
        pb.changeDynamics(self.button, 0, jointLowerLimit=0.0, jointUpperLimit=BUTTON_TRAVEL, physicsClientId=c)
        pb.setJointMotorControl2(self.button, 0, pb.POSITION_CONTROL, targetPosition=0.0, force=6.0,
                                 positionGain=0.3, physicsClientId=c)
        self.button_xy = np.asarray(xy, dtype=float)

    def button_depression(self) -> float:
        return float(pb.getJointState(self.button, 0, physicsClientId=self.client)[0])

    def add_cabinet(self, open_drawer: int) -> None:
        """A 3-drawer cabinet: a fixed carcass whose front is the plane x = CABINET_X, and three
        drawers on prismatic joints along -x (+ = open). Drawer fronts stand DRAWER_PROUD in front
        of the carcass with DRAWER_SPACING between them, so a top-down hand fits in front of one
        drawer without touching the next; each has a bar handle on posts HANDLE_OFFSET out."""
        c = self.client
        d, w, sp = CABINET_DEPTH, CABINET_HALF_WIDTH, DRAWER_SPACING
        top = DRAWER_BASE + 2 * sp + sp / 2
        t = 0.01
        parts = [((t, w, top / 2), (d - t, 0, top / 2)),  # back
                 ((d / 2, t, top / 2), (d / 2, w - t, top / 2)), ((d / 2, t, top / 2), (d / 2, -w + t, top / 2)),
                 ((d / 2, w, t), (d / 2, 0, top - t))]  # top
        for k in range(3):  # shelves under each drawer
            parts.append(((d / 2, w - 2 * t, t / 2), (d / 2, 0, DRAWER_BASE + k * sp - DRAWER_BOX_HALF_H - t)))
        col = pb.createCollisionShapeArray([pb.GEOM_BOX] * len(parts), halfExtents=[p[0] for p in parts],
                                           collisionFramePositions=[p[1] for p in parts], physicsClientId=c)
        vis = pb.createVisualShapeArray([pb.GEOM_BOX] * len(parts), halfExtents=[p[0] for p in parts],
                                        visualFramePositions=[p[1] for p in parts],
                                        rgbaColors=[(0.55, 0.57, 0.6, 1)] * len(parts), physicsClientId=c)
        # drawer frame: origin on the drawer's centre line at the carcass front plane
        face_x = -DRAWER_PROUD
        dd, dw, bh = d - 0.04, w - 0.03, DRAWER_BOX_HALF_H
        post = HANDLE_OFFSET - HANDLE_THICKNESS / 2
        dparts = [((0.0075, w - 0.01, FACE_HALF_HEIGHT), (face_x + 0.0075, 0, 0)),  # front panel
                  ((-face_x / 2, dw, bh), (face_x / 2 + 0.015, 0, 0)),  # neck joining front and box
                  ((dd / 2, dw, 0.004), (dd / 2, 0, -bh)),  # bottom
                  ((dd / 2, 0.004, bh), (dd / 2, dw, 0)), ((dd / 2, 0.004, bh), (dd / 2, -dw, 0)),
                  ((0.004, dw, bh), (dd, 0, 0)),  # back
                  ((post / 2, 0.006, 0.006), (face_x - post / 2, HANDLE_HALF_LENGTH, 0)),
                  ((post / 2, 0.006, 0.006), (face_x - post / 2, -HANDLE_HALF_LENGTH, 0)),
                  ((HANDLE_THICKNESS / 2, HANDLE_HALF_LENGTH + 0.006, HANDLE_THICKNESS / 2),
                   (face_x - HANDLE_OFFSET, 0, 0))]  # bar (shifted to HANDLE_Y per drawer below)
        fronts = [(0.85, 0.55, 0.3, 1), (0.35, 0.6, 0.85, 1), (0.45, 0.75, 0.4, 1)]
        link_cols, link_vis, link_pos = [], [], []
        for k in range(3):
            colours = [fronts[k]] + [(0.7, 0.7, 0.7, 1)] * 5 + [(0.15, 0.15, 0.15, 1)] * 3
            poss = [p[1] if i < 6 else (p[1][0], p[1][1] + HANDLE_Y[k], p[1][2]) for i, p in enumerate(dparts)]
            link_cols.append(pb.createCollisionShapeArray(
                [pb.GEOM_BOX] * len(dparts), halfExtents=[p[0] for p in dparts],
                collisionFramePositions=poss, physicsClientId=c))
            link_vis.append(pb.createVisualShapeArray(
                [pb.GEOM_BOX] * len(dparts), halfExtents=[p[0] for p in dparts],
                visualFramePositions=poss, rgbaColors=colours, physicsClientId=c))
            link_pos.append((0.0, 0.0, DRAWER_BASE + k * sp))
        n = 3
        self.cabinet = pb.createMultiBody(
            0, col, vis, (CABINET_X, 0.0, TABLE_Z),
            linkMasses=[0.5] * n, linkCollisionShapeIndices=link_cols, linkVisualShapeIndices=link_vis,
            linkPositions=link_pos, linkOrientations=[(0, 0, 0, 1)] * n,
            linkInertialFramePositions=[(0.1, 0, 0)] * n, linkInertialFrameOrientations=[(0, 0, 0, 1)] * n,
            linkParentIndices=[0] * n, linkJointTypes=[pb.JOINT_PRISMATIC] * n, linkJointAxis=[(-1, 0, 0)] * n,
            physicsClientId=c)
        for k in range(n):
            pb.changeDynamics(self.cabinet, k, jointLowerLimit=0.0, jointUpperLimit=DRAWER_LIMIT, lateralFriction=1.0,
                              physicsClientId=c)
            # a weak velocity motor is the runners' friction: drawers stay where they are left
            pb.setJointMotorControl2(self.cabinet, k, pb.VELOCITY_CONTROL, targetVelocity=0, force=3.0,
                                     physicsClientId=c)
            pb.resetJointState(self.cabinet, k, DRAWER_OPEN if k == open_drawer else 0.0, physicsClientId=c)
        self.drawer_centre_z = [TABLE_Z + p[2] for p in link_pos]

    def drawer_face_x(self, k: int) -> float:
        """World x of drawer k's front face (for its current opening)."""
        return CABINET_X - DRAWER_PROUD - self.drawer_opening(k)

    def drawer_opening(self, k: int) -> float:
        return float(pb.getJointState(self.cabinet, k, physicsClientId=self.client)[0])

    # --- state -----------------------------------------------------------------------------------
    def body_position(self, body: int) -> np.ndarray:
        return np.array(pb.getBasePositionAndOrientation(body, physicsClientId=self.client)[0])

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        s = pb.getLinkState(self.robot, EE_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array(s[4]), np.array(s[5])

    def finger_positions(self) -> np.ndarray:
        return np.array([pb.getJointState(self.robot, j, physicsClientId=self.client)[0] for j in FINGER_JOINTS])

    def grasped(self, body: int) -> bool:
        """Both fingers touch the body (what RLBench's gripper grasp check amounts to)."""
        c = self.client
        return all(len(pb.getContactPoints(self.robot, body, linkIndexA=j, physicsClientId=c)) > 0
                   for j in FINGER_JOINTS)

    def proprio(self) -> np.ndarray:
        pos, quat = self.ee_pose()
        return np.concatenate([pos, quat, [self.gripper_open]]).astype(np.float32)

    # --- control ---------------------------------------------------------------------------------
    def _command(self, arm: np.ndarray, gripper_open: float) -> None:
        c = self.client
        pb.setJointMotorControlArray(self.robot, ARM_JOINTS, pb.POSITION_CONTROL, targetPositions=list(arm),
                                     forces=[f * 2 for f in ARM_FORCES], physicsClientId=c)
        q = 0.04 if gripper_open > 0.5 else 0.0
        pb.setJointMotorControlArray(self.robot, FINGER_JOINTS, pb.POSITION_CONTROL, targetPositions=[q, q],
                                     forces=[FINGER_FORCE] * 2, physicsClientId=c)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            pb.stepSimulation(physicsClientId=self.client)
            self.physics_steps += 1
            for cb in self.step_callbacks:
                cb()

    def _step_until(self, n: int, stop_when: Callable[[], bool] | None) -> bool:
        """Up to n physics steps, stopping after the first at which `stop_when()` holds (returned)."""
        if stop_when is None:
            self.step(n)
            return False
        for _ in range(n):
            self.step()
            if stop_when():
                return True
        return False

    def _build_kinematic_robot(self) -> None:
        pb.setAdditionalSearchPath(_data_path(), physicsClientId=self.kin)
        self.kin_robot = pb.loadURDF("franka_panda/panda.urdf", ROBOT_BASE, useFixedBase=True, physicsClientId=self.kin)
        info = [pb.getJointInfo(self.kin_robot, j, physicsClientId=self.kin) for j in range(9)]
        movable = [i for i in info if i[2] != pb.JOINT_FIXED]
        self._ik_lower = [i[8] for i in movable] + [0.0, 0.0]
        self._ik_upper = [i[9] for i in movable] + [0.04, 0.04]
        self._ik_range = [u - l for u, l in zip(self._ik_upper, self._ik_lower)]

    def solve_ik(self, pos, quat, seed_joints, restarts: int = 4) -> tuple[np.ndarray, float, float]:
        """Joint angles reaching (pos, quat) from seed_joints (`restarts` warm-started solves), and
        the position / angle residuals."""
        k, r = self.kin, self.kin_robot
        q = np.array(seed_joints, dtype=float)
        rest = list(HOME_JOINTS) + [0.02, 0.02]
        for _ in range(restarts):
            for j, v in zip(ARM_JOINTS, q):
                pb.resetJointState(r, j, v, physicsClientId=k)
            sol = pb.calculateInverseKinematics(r, EE_LINK, pos, quat, lowerLimits=self._ik_lower,
                                                upperLimits=self._ik_upper, jointRanges=self._ik_range,
                                                restPoses=rest, maxNumIterations=60, residualThreshold=1e-5,
                                                physicsClientId=k)
            q = np.clip(np.array(sol[:7]), self._ik_lower[:7], self._ik_upper[:7])
        for j, v in zip(ARM_JOINTS, q):
            pb.resetJointState(r, j, v, physicsClientId=k)
        s = pb.getLinkState(r, EE_LINK, computeForwardKinematics=True, physicsClientId=k)
        pos_err = float(np.linalg.norm(np.array(s[4]) - pos))
        rot_err = quat_angle(np.array(s[5]), quat)
        return q, pos_err, rot_err

    def execute(self, pos, quat, gripper_open: float, stop_when: Callable[[], bool] | None = None) -> bool:
        """Move the end effector to (pos, quat) in a straight line, then set the gripper.
        Returns False (and does not move) when the target is out of reach.

        `stop_when` is called after every physics step of the arm's motion (its waypoints and the
        settling steps, not the gripper's): once it returns True the arm stops where it is and the
        gripper action follows, as RLBench's path loop breaks when `task.success()` holds."""
        pos = np.asarray(pos, dtype=float)
        quat = np.asarray(quat, dtype=float)
        quat = quat / np.linalg.norm(quat)
        q_goal, pos_err, rot_err = self.solve_ik(pos, quat, self.arm_target)
        if pos_err > IK_POS_TOL or rot_err > IK_ROT_TOL:
            return False
        start_pos, start_quat = self.ee_pose()
        dist = float(np.linalg.norm(pos - start_pos))
        ang = quat_angle(start_quat, quat)
        n = max(2, int(math.ceil(max(dist / PATH_STEP, ang / PATH_ROT_STEP))))
        q = self.arm_target
        stopped = False
        for i in range(1, n + 1):
            a = i / n
            wp = start_pos + a * (pos - start_pos)
            wq = slerp(start_quat, quat, a)
            # waypoints 1 cm apart: one solve warm-started from the previous waypoint suffices
            q, _, _ = self.solve_ik(wp, wq, q, restarts=1) if i < n else (q_goal, 0, 0)
            self.arm_target = q
            self._command(q, self.gripper_open)
            if self._step_until(STEPS_PER_WAYPOINT, stop_when):
                stopped = True
                break
        if not stopped:
            self._step_until(SETTLE_STEPS, stop_when)
        if (gripper_open > 0.5) != (self.gripper_open > 0.5):
            self.gripper_open = 1.0 if gripper_open > 0.5 else 0.0
            self._command(self.arm_target, self.gripper_open)
            self.step(GRIPPER_STEPS)
        return True

    # --- cameras ---------------------------------------------------------------------------------
    def camera_matrices(self, cam: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(view 4x4, projection 4x4, vertical fov deg) as row-major numpy (world -> eye -> clip)."""
        if cam == "wrist":
            s = pb.getLinkState(self.robot, 8, computeForwardKinematics=True, physicsClientId=self.client)
            rot = np.array(pb.getMatrixFromQuaternion(s[5])).reshape(3, 3)
            approach, side = rot[:, 2], rot[:, 0]
            eye = np.array(s[4]) + 0.05 * approach - 0.06 * side
            target, up, fov = eye + approach, side, 70.0
        else:
            eye, target, fov = {
                "front": ((0.95, 0.0, 1.45), (0.1, 0.0, 0.82), 50.0),
                "left_shoulder": ((-0.3, 0.6, 1.4), (0.2, 0.0, 0.8), 55.0),
                "right_shoulder": ((-0.3, -0.6, 1.4), (0.2, 0.0, 0.8), 55.0),
            }[cam]
            up = (0, 0, 1)
        view = pb.computeViewMatrix(list(eye), list(target), list(up), physicsClientId=self.client)
        proj = pb.computeProjectionMatrixFOV(fov, 1.0, NEAR, FAR, physicsClientId=self.client)
        return np.array(view).reshape(4, 4).T, np.array(proj).reshape(4, 4).T, fov

    def render(self, cam: str, size: int) -> dict[str, np.ndarray]:
        """RGB uint8 [H,W,3], z-depth float32 [H,W] metres, point cloud float32 [H,W,3] world frame."""
        view, proj, _ = self.camera_matrices(cam)
        _, _, rgba, zbuf, _ = pb.getCameraImage(size, size, view.T.ravel().tolist(), proj.T.ravel().tolist(),
                                                renderer=pb.ER_TINY_RENDERER, shadow=0,
                                                flags=pb.ER_NO_SEGMENTATION_MASK, physicsClientId=self.client)
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)
        zbuf = np.asarray(zbuf, dtype=np.float64).reshape(size, size)
        depth = FAR * NEAR / (FAR - (FAR - NEAR) * zbuf)
        pcd = depth_to_points(zbuf, view, proj)
        return {"rgb": rgba[..., :3].copy(), "depth": depth.astype(np.float32), "pcd": pcd.astype(np.float32)}


def depth_to_points(zbuf: np.ndarray, view: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Unproject an OpenGL depth buffer [H,W] in [0,1] to world points [H,W,3]."""
    h, w = zbuf.shape
    # TinyRenderer samples pixel (col, row) at window coordinates (col, H - 1 - row), not at pixel
    # centres; measured against known geometry in tests/test_memorybench.py
    u = np.arange(w) / w * 2 - 1
    v = 1 - (np.arange(h) + 1) / h * 2
    x, y = np.meshgrid(u, v)
    ndc = np.stack([x, y, 2 * zbuf - 1, np.ones_like(x)], axis=-1)
    pts = ndc @ np.linalg.inv(proj @ view).T
    return pts[..., :3] / pts[..., 3:4]


def project_points(points: np.ndarray, view: np.ndarray, proj: np.ndarray, size: int) -> np.ndarray:
    """World points [...,3] -> pixel (col, row) float [...,2] (inverse of depth_to_points)."""
    hom = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1) @ (proj @ view).T
    ndc = hom[..., :2] / hom[..., 3:4]
    col = (ndc[..., 0] + 1) / 2 * size
    row = (1 - ndc[..., 1]) / 2 * size - 1
    return np.stack([col, row], axis=-1)


def quat_angle(a, b) -> float:
    d = abs(float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return 2 * math.acos(min(1.0, d))


def slerp(a, b, t: float) -> np.ndarray:
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    d = float(np.dot(a, b))
    if d < 0:
        b, d = -b, -d
    if d > 0.9995:
        r = a + t * (b - a)
        return r / np.linalg.norm(r)
    th = math.acos(d)
    return (math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th)
