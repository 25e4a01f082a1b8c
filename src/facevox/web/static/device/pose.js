// Head pose (facevox/pose.py): R = Rz(roll) · Rx(pitch) · Ry(yaw), angles in degrees; model frame x right,
// y up, z towards the camera.

const RAD = Math.PI / 180;

export function rotationMatrix(yaw, pitch, roll) {
  const [cy, cp, cr] = [yaw, pitch, roll].map((a) => Math.cos(a * RAD));
  const [sy, sp, sr] = [yaw, pitch, roll].map((a) => Math.sin(a * RAD));
  const ry = [[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]];
  const rx = [[1, 0, 0], [0, cp, sp], [0, -sp, cp]];
  const rz = [[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]];
  return multiply(rz, multiply(rx, ry));
}

function multiply(a, b) {
  return a.map((row) => [0, 1, 2].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
}

export function angles(r) {
  const yaw = Math.atan2(-r[2][0], r[2][2]);
  const pitch = Math.asin(Math.min(1, Math.max(-1, -r[2][1])));
  const roll = Math.atan2(r[0][1], r[1][1]);
  return [yaw / RAD, pitch / RAD, roll / RAD];
}

// The eigenvector of the largest eigenvalue of a symmetric 4×4 matrix (cyclic Jacobi).
function topEigenvector(m) {
  const a = m.map((row) => row.slice());
  const v = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
  for (let sweep = 0; sweep < 50; sweep += 1) {
    let off = 0;
    for (let p = 0; p < 4; p += 1) for (let q = p + 1; q < 4; q += 1) off += a[p][q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < 4; p += 1) {
      for (let q = p + 1; q < 4; q += 1) {
        if (Math.abs(a[p][q]) < 1e-300) continue;
        const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < 4; k += 1) {
          const akp = a[k][p]; const akq = a[k][q];
          a[k][p] = c * akp - s * akq; a[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < 4; k += 1) {
          const apk = a[p][k]; const aqk = a[q][k];
          a[p][k] = c * apk - s * aqk; a[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < 4; k += 1) {
          const vkp = v[k][p]; const vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq; v[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  let best = 0;
  for (let i = 1; i < 4; i += 1) if (a[i][i] > a[best][best]) best = i;
  return v.map((row) => row[best]);
}

// The rotation R that best maps the centred model points onto the centred observed points (the proper
// rotation of Kabsch's fit, by Horn's quaternion method); both are arrays of [x, y, z].
export function fitRotation(model, observed) {
  const centre = (points) => [0, 1, 2].map((j) => points.reduce((s, p) => s + p[j], 0) / points.length);
  const ca = centre(model);
  const cb = centre(observed);
  const s = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  model.forEach((p, n) => {
    for (let i = 0; i < 3; i += 1) for (let j = 0; j < 3; j += 1) s[i][j] += (p[i] - ca[i]) * (observed[n][j] - cb[j]);
  });
  const [[xx, xy, xz], [yx, yy, yz], [zx, zy, zz]] = s;
  const [w, x, y, z] = topEigenvector([
    [xx + yy + zz, yz - zy, zx - xz, xy - yx],
    [yz - zy, xx - yy - zz, xy + yx, zx + xz],
    [zx - xz, xy + yx, -xx + yy - zz, yz + zy],
    [xy - yx, zx + xz, yz + zy, -xx - yy + zz],
  ]);
  return [
    [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
    [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
    [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
  ];
}

// (yaw, pitch, roll) of 68 landmarks [x, y, z] in the photo/crop frame (x right, y down, z away)
// against the mean face's landmarks in the model frame.
export function headPose(landmarks, meanLandmarks) {
  const observed = landmarks.map(([x, y, z]) => [x, -y, -z]);
  return angles(fitRotation(meanLandmarks, observed));
}
