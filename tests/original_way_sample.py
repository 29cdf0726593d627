"""A sampling script written the original's way (its sample.py, cut down), for
tests/test_original_api.py: it uses only names the original's modules had. It prints one JSON
line describing what it did. Run as `python original_way_sample.py <training flags>`."""
import json
import os
import sys

sys.path.insert(0, os.environ['BIGGAN_ROOT'])

import utils  # noqa: E402


def run(config):
    # Derived entries, as the original's sample.py set them.
    config['resolution'] = utils.imsize_dict[config['dataset']]
    config['n_classes'] = utils.nclass_dict[config['dataset']]
    config['G_activation'] = utils.activation_dict[config['G_nl']]
    config['D_activation'] = utils.activation_dict[config['D_nl']]
    config = utils.update_config_roots(config)
    config['skip_init'] = True
    config['no_optim'] = True
    device = 'cpu'
    utils.seed_rng(config['seed'])
    model = __import__(config['model'])
    experiment_name = (config['experiment_name'] if config['experiment_name']
                       else utils.name_from_config(config))
    G = model.Generator(**config).to(device)
    utils.count_parameters(G)
    state_dict = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
                  'best_FID': 999999, 'config': config}
    utils.load_weights(G if not config['use_ema'] else None, None, state_dict,
                       config['weights_root'], experiment_name, config['load_weights'],
                       G if config['ema'] and config['use_ema'] else None, strict=False,
                       load_optim=False)
    G_batch_size = max(config['G_batch_size'], config['batch_size'])
    z_, y_ = utils.prepare_z_y(G_batch_size, G.dim_z, config['n_classes'], device=device,
                               fp16=config['G_fp16'], z_var=config['z_var'])
    if config['G_eval_mode']:
        G.eval()
    images, labels = utils.sample(G, z_, y_, config)
    utils.sample_sheet(G, classes_per_sheet=utils.classes_per_sheet_dict[config['dataset']],
                       num_classes=config['n_classes'], samples_per_class=10,
                       parallel=config['parallel'], samples_root=config['samples_root'],
                       experiment_name=experiment_name,
                       folder_number=config['sample_sheet_folder_num'], z_=z_)
    for fix_z, fix_y in zip([False, False, True], [False, True, False]):
        utils.interp_sheet(G, num_per_sheet=16, num_midpoints=8,
                           num_classes=config['n_classes'], parallel=config['parallel'],
                           samples_root=config['samples_root'],
                           experiment_name=experiment_name,
                           folder_number=config['sample_sheet_folder_num'], sheet_number=0,
                           fix_z=fix_z, fix_y=fix_y, device=device)
    checksum = sum(float(v.double().sum()) for v in G.state_dict().values()
                   if v.is_floating_point())
    print(json.dumps({'itr': state_dict['itr'], 'experiment_name': experiment_name,
                      'images': list(images.shape), 'labels_max': int(labels.max()),
                      'z_type': type(z_).__name__, 'image_type': type(images).__name__,
                      'checksum': checksum, 'training': G.training}))


if __name__ == '__main__':
    parser = utils.prepare_parser()
    parser = utils.add_sample_parser(parser)
    run(vars(parser.parse_args()))
