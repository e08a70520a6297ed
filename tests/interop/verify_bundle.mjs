// Verify a key-based Sigstore bundle with sigstore-js, independently of pkgtool.
//
//   node verify_bundle.mjs BUNDLE.json PUBLIC_KEY.pem
//
// Trust material: only the given public key (no Fulcio CA, no Rekor, no CT logs, no TSA),
// so every threshold is 0 and the verdict rests on the DSSE signature alone.  The key is
// returned for any hint, as `cosign verify --key` does: the hint names, it does not trust.
// On success prints {"payloadType", "subjects", "hint"} as JSON and exits 0; on any
// failure prints the error to stderr and exits 1.
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity } from '@sigstore/verify';

function main(argv) {
  if (argv.length !== 2) {
    throw new Error('usage: node verify_bundle.mjs BUNDLE.json PUBLIC_KEY.pem');
  }
  const [bundlePath, keyPath] = argv;
  const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const publicKey = createPublicKey(readFileSync(keyPath));
  let seenHint = null;
  const trustMaterial = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: (hint) => {
      seenHint = hint;
      return { publicKey, validFor: () => true };
    },
  };
  const verifier = new Verifier(trustMaterial, {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    timestampThreshold: 0,
  });
  verifier.verify(toSignedEntity(bundle));

  const envelope = bundle.content.dsseEnvelope;
  let subjects = [];
  if (envelope.payloadType === 'application/vnd.in-toto+json') {
    subjects = JSON.parse(envelope.payload.toString('utf8')).subject;
  }
  process.stdout.write(
    JSON.stringify({ payloadType: envelope.payloadType, subjects, hint: seenHint }) + '\n',
  );
}

try {
  main(process.argv.slice(2));
} catch (err) {
  // ValidationError (@sigstore/bundle) lists the offending fields; VerificationError has a code.
  const fields = Array.isArray(err.fields) ? ` (${err.fields.join(', ')})` : '';
  process.stderr.write(`verify_bundle: ${err.code ? err.code + ': ' : ''}${err.message}${fields}\n`);
  process.exit(1);
}
